"""Re-id losses: OIM / LOIM with a vectorized memory update."""

from oimnet.losses.memory import apply_lut_schedule_, lut_schedule, push_queue_, update_lut_
from oimnet.losses.oim import LOSS_TYPES, OIMLoss

__all__ = ["OIMLoss", "LOSS_TYPES", "update_lut_", "lut_schedule", "apply_lut_schedule_", "push_queue_"]
