"""Training and evaluation draw from disjoint pools: every generated key and value belongs to one split by its hash,
and training haystacks start in the second half of the essays, where an evaluation document (which starts at the
first sentence) does not reach below 300K tokens. A figure measured on the eval split never saw its text in training."""
import zlib

SPLITS = ("eval", "train")
TRAIN_SHARE = 8  # one key or value in 8 is for training


def split_of(value: str) -> str:
    return "train" if zlib.crc32(value.encode()) % TRAIN_SHARE == 0 else "eval"


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def essay_start(split: str, num_sentences: int, rng) -> int:
    """The sentence a haystack starts at: the first for eval, one in the second half for training."""
    return 0 if split == "eval" else rng.randrange(num_sentences // 2, num_sentences)
