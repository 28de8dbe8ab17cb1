"""Evasion attacks on the deployed classifier, one module each: FGSM (:mod:`.fgsm`), BIM
(:mod:`.bim`), Carlini-Wagner (:mod:`.cw`) and JSMA (:mod:`.jsma`), on the family base
:class:`~shieldsplit.evasion.base.EvasionAttack` (:mod:`.base`); every public name is also
importable from :mod:`shieldsplit.evasion.adversarial`. (Nothing is re-exported here: the
functions share their modules' names.)"""
