"""Evasion attacks on the deployed classifier (FGSM, BIM, Carlini-Wagner, JSMA):
``shieldsplit.evasion.adversarial``."""
