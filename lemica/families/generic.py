"""Any diffusers DiT lemica has no family knowledge of: generic signals, flow-matching output."""
from lemica.families.base import GENERIC, FamilyAdapter, register

ADAPTER = register(FamilyAdapter(GENERIC))
