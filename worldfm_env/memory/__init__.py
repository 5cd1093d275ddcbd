"""The world state that changes: each env's growing memory of generated content (``memory="grow"``).

The captured scene memory (point cloud and reference bank) is immutable and lives in the scene pool; what the frame
model generates where the anchor was empty is lifted to 3-D and kept here, per env, on the device
(:class:`GrowingMemory`). The observation pipeline owns one and writes it after every render.
"""

from worldfm_env.memory.growing import MEMORY_MODES, GrowingMemory, check_memory_mode

__all__ = ["GrowingMemory", "MEMORY_MODES", "check_memory_mode"]
