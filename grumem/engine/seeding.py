"""One way to derive seeds: a base seed and indices (document, rollout, turn, sample) mixed into one seed."""
import hashlib


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers; distinct tuples give unrelated seeds, the same on every run and machine."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
