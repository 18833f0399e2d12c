from __future__ import annotations

import sys
from pathlib import Path

# Test helper modules (_server, _binaries) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))
