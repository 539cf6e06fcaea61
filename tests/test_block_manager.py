"""BlockManager (and the scheduler's use of it) without a model: ref counts, prefix hits, fork, eviction, reset."""
from grumem.engine.block_manager import BlockManager
from grumem.engine.scheduler import Scheduler
from grumem.engine.sampling_params import SamplingParams
from grumem.engine.sequence import Sequence

BLOCK = 4


def seq(tokens: list[int]) -> Sequence:
    return Sequence(tokens, SamplingParams(), "r")


def finish_prefill(bm: BlockManager, s: Sequence) -> None:
    s.num_computed_tokens = len(s)
    bm.mark_computed(s)


def test_same_prefix_maps_to_same_blocks_and_refs_return_to_zero():
    bm = BlockManager(16, BLOCK)
    a, b = seq(list(range(10))), seq(list(range(8)) + [99, 98, 97])
    bm.allocate(a)
    finish_prefill(bm, a)
    bm.allocate(b)
    assert b.block_table[:2] == a.block_table[:2] and b.num_computed_tokens == 8
    assert bm.blocks[a.block_table[0]].ref_count == 2
    bm.deallocate(a)
    bm.deallocate(b)
    assert all(block.ref_count == 0 for block in bm.blocks) and bm.num_free_blocks == 16


def test_uncomputed_blocks_are_shared_only_within_their_step():
    bm = BlockManager(16, BLOCK)
    a, b, c = (seq(list(range(9))) for _ in range(3))
    bm.allocate(a)
    bm.computing.update(a.block_table[:2])  # a's prefill writes its two full blocks this step
    bm.allocate(b)
    assert b.num_computed_tokens == 8
    bm.computing.clear()  # a later step, a never finished: nothing may be served
    bm.allocate(c)
    assert c.num_computed_tokens == 0


def test_last_token_is_never_a_hit():
    bm = BlockManager(8, BLOCK)
    a = seq(list(range(8)))
    bm.allocate(a)
    finish_prefill(bm, a)
    b = seq(list(range(8)))
    bm.allocate(b)
    assert b.num_computed_tokens == 4  # the second block holds the last token: recomputed for its logits


def test_fork_shares_full_blocks_and_copies_the_partial_one():
    bm = BlockManager(16, BLOCK)
    parent = seq(list(range(10)))
    bm.allocate(parent)
    finish_prefill(bm, parent)
    children = [seq(list(range(10))) for _ in range(3)]
    copies = bm.fork(parent, children)
    assert all(c.block_table[:2] == parent.block_table[:2] for c in children)
    assert len({c.block_table[2] for c in children} | {parent.block_table[2]}) == 4
    assert copies == [(parent.block_table[2], c.block_table[2]) for c in children]
    assert bm.blocks[parent.block_table[0]].ref_count == 4


def test_a_fork_without_a_free_block_waits_and_is_served_by_the_prefix_cache():
    bm = BlockManager(4, BLOCK)
    scheduler = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=64)
    parent = seq(list(range(10)))  # 3 blocks, the last partial: 1 block left for 2 copies
    scheduler.add(parent)
    scheduler.postprocess(scheduler.schedule())
    assert scheduler.running == [parent]
    first, second = seq(list(range(10))), seq(list(range(10)))
    copies = scheduler.fork(parent, [first, second])
    assert copies == [(parent.block_table[2], first.block_table[2])] and bm.num_free_blocks == 0
    assert scheduler.running == [parent, first] and scheduler.waiting == [second] and second.block_table == []
    for s in (parent, first):
        scheduler.finish(s, "stop")
    batch = scheduler.schedule()  # re-admitted: its two full blocks come from the cache, the tail is recomputed
    assert batch.seqs == [second] and second.num_computed_tokens == 8 and batch.num_new_tokens == [2]
    scheduler.postprocess(batch)
    scheduler.finish(second, "stop")
    assert bm.num_free_blocks == 4 and all(block.ref_count == 0 for block in bm.blocks)


def test_freed_blocks_stay_cached_until_evicted_least_recent_first():
    bm = BlockManager(4, BLOCK)
    a = seq(list(range(9)))  # 3 blocks, 2 full
    bm.allocate(a)
    finish_prefill(bm, a)
    bm.deallocate(a)
    b = seq(list(range(9)))
    assert bm.can_allocate(b)
    bm.allocate(b)
    assert b.num_computed_tokens == 8  # served from free-but-cached blocks
    bm.deallocate(b)
    c = seq([50 + i for i in range(16)])  # needs all 4 blocks: evicts everything cached
    bm.allocate(c)
    assert bm.hash_to_block.keys() == {bm.blocks[i].hash for i in c.block_table[:4]} - {None}


def test_pin_holds_blocks_and_reset_forgets_hashes():
    bm = BlockManager(8, BLOCK)
    a = seq(list(range(12)))
    bm.allocate(a)
    finish_prefill(bm, a)
    bm.deallocate(a)
    pinned = bm.pin(list(range(8)))
    assert len(pinned) == 2 and bm.num_free_blocks == 6
    bm.unpin(pinned)
    bm.reset_prefix_cache()
    assert bm.hash_to_block == {} and bm.num_free_blocks == 8
