"""The random source of event ids, lease tokens and trace ids.

Private, so that an application calling ``random.seed()`` cannot make two processes generate the same
event id (a repeated id is stored once: the second event would be lost); reseeded from the OS in every
forked child, so that pre-fork workers never repeat each other. Faster than ``SystemRandom``, which
costs a system call per number.
"""

from __future__ import annotations

import os
import random

__all__ = ["rng"]

rng = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: rng.seed(os.urandom(32)))
