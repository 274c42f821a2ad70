import sys
from pathlib import Path

# The project is not an installed package: `include` and `dags` import from the repository root.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
