from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
TEST_DATA = ROOT / "tests" / "data"  # checkpoints of earlier versions and trained ones, kept in the repository
