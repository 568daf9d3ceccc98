"""Files shipped with the package (see NOTICE.md for their licence)."""
from pathlib import Path

SAMPLE_PATH = Path(__file__).with_name("hotpotqa_dev_distractor_sample.json")
