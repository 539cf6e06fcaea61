"""Paged KV-cache bookkeeping: blocks, ref counts and the hash-chained prefix cache.

A full block's hash covers its tokens and, through the previous block's hash, the whole prefix before it. A block
is registered when it is allocated full, so identical prompts admitted in the same step share it; a block whose KV
is not written yet may be shared only by prefills in the step that writes it (`computing`). Freed blocks keep their
hash until reused, and allocation takes the least recently freed block first (LRU eviction).
"""
from collections import OrderedDict

from grumem.engine.sequence import Sequence


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "token_ids", "computed")

    def __init__(self, block_id: int):
        self.block_id = block_id
        self.ref_count = 0
        self.hash: int | None = None
        self.token_ids: tuple[int, ...] = ()
        self.computed = False  # its KV has been written


def chain_hash(token_ids: tuple[int, ...], prefix_hash: int | None) -> int:
    return hash((prefix_hash, token_ids))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        assert num_blocks > 0 and block_size > 0
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.hash_to_block: dict[int, int] = {}
        self.free_block_ids: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.computing: set[int] = set()  # blocks whose KV the step being scheduled writes

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    def _blocks_of(self, token_ids: list[int], num_blocks: int):
        """(hash, tokens) of the first num_blocks full blocks."""
        prefix = None
        for i in range(num_blocks):
            tokens = tuple(token_ids[i * self.block_size : (i + 1) * self.block_size])
            prefix = chain_hash(tokens, prefix)
            yield prefix, tokens

    def cached_prefix(self, token_ids: list[int], max_blocks: int) -> list[Block]:
        """Leading blocks of `token_ids`, at most max_blocks, whose KV is cached (or written this step)."""
        hits = []
        for h, tokens in self._blocks_of(token_ids, max_blocks):
            block_id = self.hash_to_block.get(h)
            block = self.blocks[block_id] if block_id is not None else None
            if block is None or block.token_ids != tokens or not (block.computed or block_id in self.computing):
                break  # the token check guards against hash collisions
            hits.append(block)
        return hits

    # --- whole-sequence allocation --------------------------------------------------------------------------
    def _cached_prefix_of(self, seq: Sequence) -> list[Block]:
        return self.cached_prefix(seq.token_ids, seq.max_cached_tokens // self.block_size)

    def can_allocate(self, seq: Sequence) -> bool:
        hits = self._cached_prefix_of(seq)
        revived = sum(block.ref_count == 0 for block in hits)  # cached but free: they leave the free list
        return seq.num_blocks(self.block_size) - len(hits) + revived <= self.num_free_blocks

    def allocate(self, seq: Sequence) -> None:
        """Blocks for every token of `seq`, reusing its cached prefix; sets num_computed_tokens."""
        assert not seq.block_table
        hits = self._cached_prefix_of(seq)
        for block in hits:
            self._acquire(block)
        new_full = list(self._blocks_of(seq.token_ids, len(seq) // self.block_size))[len(hits) :]
        seq.block_table = [block.block_id for block in hits]
        for i in range(len(hits), seq.num_blocks(self.block_size)):
            block = self._acquire_free()
            if i - len(hits) < len(new_full):
                self._register(block, *new_full[i - len(hits)])
            seq.block_table.append(block.block_id)
        seq.num_computed_tokens = len(hits) * self.block_size
        seq.num_marked_blocks = len(hits)

    def deallocate(self, seq: Sequence) -> None:
        for block_id in reversed(seq.block_table):  # tail blocks (longest prefixes) are evicted first
            self._release(self.blocks[block_id])
        seq.block_table = []
        seq.num_computed_tokens = seq.num_marked_blocks = 0

    # --- decode ---------------------------------------------------------------------------------------------
    def can_append(self, seq: Sequence) -> bool:
        return len(seq.block_table) >= seq.num_blocks(self.block_size) or self.num_free_blocks > 0

    def may_append(self, seq: Sequence) -> None:
        """Makes room for the KV of the sequence's last token."""
        if len(seq.block_table) < seq.num_blocks(self.block_size):
            seq.block_table.append(self._acquire_free().block_id)

    def mark_computed(self, seq: Sequence) -> None:
        """After a step: blocks now fully written become cacheable; blocks filled by decode get registered."""
        for i in range(seq.num_marked_blocks, seq.num_computed_tokens // self.block_size):
            block = self.blocks[seq.block_table[i]]
            if block.hash is None:
                prefix = self.blocks[seq.block_table[i - 1]].hash if i else None
                tokens = tuple(seq.block_tokens(i, self.block_size))
                self._register(block, chain_hash(tokens, prefix), tokens)
            block.computed = True
        seq.num_marked_blocks = max(seq.num_marked_blocks, seq.num_computed_tokens // self.block_size)

    # --- sharing --------------------------------------------------------------------------------------------
    def fork(self, parent: Sequence, children: list[Sequence]) -> list[tuple[int, int]]:
        """Children share the parent's blocks; a partial last block is copied (returned as (src, dst) pairs).

        A child that finds no free block for its copy is left without blocks, to be re-admitted through the
        prefix cache."""
        copies = []
        partial = len(parent) % self.block_size != 0
        for child in children:
            if partial and self.num_free_blocks == 0:
                continue
            for block_id in parent.block_table:
                self.blocks[block_id].ref_count += 1
            child.block_table = list(parent.block_table)
            child.num_computed_tokens, child.num_marked_blocks = parent.num_computed_tokens, parent.num_marked_blocks
            if partial:
                self._release(self.blocks[child.block_table[-1]])
                child.block_table[-1] = self._acquire_free().block_id
                copies.append((parent.block_table[-1], child.block_table[-1]))
        return copies

    def pin(self, token_ids: list[int]) -> list[int]:
        """Holds the cached full blocks of a prefix so they are never evicted; returns them for `unpin`."""
        blocks = self.cached_prefix(token_ids, len(token_ids) // self.block_size)
        for block in blocks:
            self._acquire(block)
        return [block.block_id for block in blocks]

    def unpin(self, block_ids: list[int]) -> None:
        for block_id in reversed(block_ids):
            self._release(self.blocks[block_id])

    def reset_prefix_cache(self) -> None:
        """Forgets every cached block (after a weight update their KV is stale)."""
        for block in self.blocks:
            self._unregister(block)

    # --- internals ------------------------------------------------------------------------------------------
    def _acquire(self, block: Block) -> None:
        if block.ref_count == 0:
            del self.free_block_ids[block.block_id]
        block.ref_count += 1

    def _acquire_free(self) -> Block:
        block = self.blocks[self.free_block_ids.popitem(last=False)[0]]
        self._unregister(block)  # evicts what it cached
        block.ref_count = 1
        return block

    def _register(self, block: Block, h: int, token_ids: tuple[int, ...]) -> None:
        block.hash, block.token_ids, block.computed = h, token_ids, False
        self.hash_to_block.setdefault(h, block.block_id)  # the first holder stays the cached copy

    def _unregister(self, block: Block) -> None:
        if block.hash is not None and self.hash_to_block.get(block.hash) == block.block_id:
            del self.hash_to_block[block.hash]
        block.hash, block.token_ids, block.computed = None, (), False

    def _release(self, block: Block) -> None:
        assert block.ref_count > 0
        block.ref_count -= 1
        if block.ref_count == 0:
            if not block.computed:
                self._unregister(block)  # never written: must not be served to anyone
            self.free_block_ids[block.block_id] = None
