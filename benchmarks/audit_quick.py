"""Time and scores of ``shieldsplit.audit(budget="quick")`` on the PGSL paper's network.

Issue 3 asks for a quick audit of the paper's network on 64 images in under 3 minutes on
2 cores. Usage: python benchmarks/audit_quick.py  (needs ../shared/data)
"""

import time

import torch

import shieldsplit as ss
from shieldsplit.data import default_data_root, load_dataset

ds = load_dataset("breastmnist", root=default_data_root(), seed=0)
torch.manual_seed(0)
net = ss.PGSLNet(num_classes=2, image_size=28)
t = time.time()
r = ss.audit(net, data=(ds.x_train, ds.y_train), cut=2, budget="quick", seed=0, progress=False)
print(r.summary())
print("total seconds", round(time.time() - t, 1))
