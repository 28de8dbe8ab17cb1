"""The defences beside PGSL: latent perturbation and the published baselines.

Importing this package registers each of them with
:func:`shieldsplit.defense.register_defense`.
"""
