"""OIMNet, OIMNet++ and OIMNet+++ for person search (detection + re-id)."""

__version__ = "0.1.0"
