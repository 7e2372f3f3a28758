"""Re-id losses: OIM / LOIM with a vectorized memory update."""

from oimnet.losses.memory import push_queue_, update_lut_
from oimnet.losses.oim import LOSS_TYPES, OIMLoss

__all__ = ["OIMLoss", "LOSS_TYPES", "update_lut_", "push_queue_"]
