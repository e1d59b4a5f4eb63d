"""Batch slices trained in parallel threads (seqbench.training.parallel), the CPU plan, bf16 default."""

import gc
import platform
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from helpers import make_config, tiny
from seqbench.training import hardware
from seqbench.training.cpu import plan_cpu
from seqbench.training.parallel import BatchSplitter

ARCHS = ["lstm", "lstm_dropout", "lstm_recurrent_dropout", "bilstm", "cnn_lstm", "stacked_lstm"]


def small_net(arch: str, tmp_path, *overrides: str):
    cfg = make_config(tmp_path, [f"model={arch}", "data=synthetic", *overrides])
    return instantiate(cfg.model.net)


def batch(n: int = 9, width: int = 23, vocab: int = 30, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, vocab, (n, width), generator=g)
    lengths = torch.randint(1, width + 1, (n,), generator=g)
    labels = torch.randint(0, 2, (n,), generator=g).float()
    return tokens, lengths, labels


def gradients(net, call, tokens, lengths, labels) -> tuple[torch.Tensor, list[torch.Tensor]]:
    net.zero_grad(set_to_none=True)
    logits = call(net, tokens, lengths)
    F.binary_cross_entropy_with_logits(logits, labels).backward()
    return logits.detach(), [p.grad.clone() for p in net.parameters()]


def plain(net, *inputs):
    return net(*inputs)


@pytest.mark.parametrize("arch", ARCHS)
def test_split_batch_gives_the_whole_batch_gradient(arch, tmp_path):
    """Without dropout, 3 slices in threads = one batch: same logits and parameter gradients."""
    net = small_net(arch, tmp_path, "model.net.dropout=0").train()
    for module in net.modules():  # switch every dropout off, so both paths are deterministic
        for name in ("dropout", "recurrent_dropout", "p"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
    inputs = batch()
    splitter = BatchSplitter(3)
    try:
        split_logits, split_grads = gradients(net, splitter, *inputs)
    finally:
        splitter.close()
    logits, grads = gradients(net, plain, *inputs)
    torch.testing.assert_close(split_logits, logits)
    for split_grad, grad in zip(split_grads, grads, strict=True):
        torch.testing.assert_close(split_grad, grad, rtol=1e-5, atol=1e-7)


def test_split_dropout_is_reproducible_and_per_slice(tmp_path):
    """Dropout masks come from per-slice generators seeded from torch's global one: the same
    seed gives the same gradients whatever the thread timing; another seed gives others."""
    net = small_net(
        "lstm_recurrent_dropout", tmp_path, "model.net.encoder.embedding_dropout=0.3"
    ).train()
    inputs = batch(n=16)
    splitter = BatchSplitter(2)
    runs = []
    try:
        for seed in (7, 7, 8):
            torch.manual_seed(seed)
            runs.append(gradients(net, splitter, *inputs)[1])
    finally:
        splitter.close()
    for a, b in zip(runs[0], runs[1], strict=True):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, c) for a, c in zip(runs[0], runs[2], strict=True))


def test_split_evaluation_and_small_batches_fall_back_correctly(tmp_path):
    net = small_net("bilstm", tmp_path).eval()
    tokens, lengths, _ = batch(n=10)
    splitter = BatchSplitter(4)
    try:
        with torch.no_grad():
            torch.testing.assert_close(splitter(net, tokens, lengths), net(tokens, lengths))
        with torch.inference_mode():
            torch.testing.assert_close(splitter(net, tokens, lengths), net(tokens, lengths))
        net.train()
        one = splitter(net, tokens[:3], lengths[:3])  # fewer rows than slices: one plain call
        assert one.grad_fn is not None and "SplitBatch" not in type(one.grad_fn).__name__
    finally:
        splitter.close()
    with pytest.raises(ValueError, match="splits must be >= 1"):
        BatchSplitter(0)


def _plan(tmp_path, *overrides: str):
    return plan_cpu(make_config(tmp_path, ["num_threads=4", *overrides]))


def test_cpu_plan_splits_batches_only_for_one_cpu_process(tmp_path):
    assert _plan(tmp_path).batch_split == 2 and _plan(tmp_path).threads_per_split == 2
    wide = _plan(tmp_path, "data.batch_size=256")  # slices of at least 32 examples
    assert wide.batch_split == 4 and wide.threads_per_split == 1
    assert _plan(tmp_path, "data.batch_size=40").batch_split == 1
    assert _plan(tmp_path, "num_threads=2").batch_split == 2
    assert _plan(tmp_path, "batch_split=4").threads_per_split == 1
    assert _plan(tmp_path, "batch_split=16").batch_split == 4  # never more slices than threads
    assert _plan(tmp_path, "batch_split=1").batch_split == 1
    assert _plan(tmp_path, "trainer=gpu").batch_split == 1
    assert _plan(tmp_path, "trainer=ddp").batch_split == 1
    assert _plan(tmp_path, "trainer.devices=2").batch_split == 1
    with pytest.raises(ValueError, match="batch_split must be null or >= 1"):
        _plan(tmp_path, "batch_split=0")


def test_cpu_precision_follows_native_bf16(monkeypatch, tmp_path):
    """bf16-mixed by default only where the CPU computes bf16 natively; a pin (the command
    line, an experiment) wins over that default, each checked where it differs from it."""
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    assert make_config(tmp_path).trainer.precision == "bf16-mixed"
    assert make_config(tmp_path, ["trainer.precision=32-true"]).trainer.precision == "32-true"
    assert make_config(tmp_path, ["experiment=keras_faithful"]).trainer.precision == "32-true"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "avx2"}))
    assert make_config(tmp_path).trainer.precision == "32-true"
    pinned = make_config(tmp_path, ["trainer.precision=bf16-mixed"])
    assert pinned.trainer.precision == "bf16-mixed"


def test_training_with_batch_slices_is_tracked_and_stops_its_threads(tmp_path):
    """A real run with 2 slices: tracked as such, learns, and leaves no worker threads behind."""
    import threading

    from mlflow import MlflowClient

    from seqbench.train import train

    cfg = make_config(
        tmp_path,
        [*tiny(epochs=1), "num_threads=2", "batch_split=2"],
    )
    result = train(cfg)
    run = MlflowClient(cfg.logger.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["batch_split"] == "2" and run.data.tags["torch.num_threads"] == "1"
    assert "test/acc" in run.data.metrics
    assert not [t for t in threading.enumerate() if t.name.startswith("seqbench-split")]


@pytest.mark.skipif(
    not Path("/proc/self/status").exists() or platform.libc_ver()[0] != "glibc",
    reason="resident-set check needs Linux /proc and glibc",
)
def test_release_freed_memory_returns_the_heap_to_the_os():
    """What each run does at its end, so a multirun's process does not keep every job's heap."""

    def rss_mb() -> int:
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line.split()[1] for line in status if line.startswith("VmRSS"))) // 1024

    blocks = [bytearray(1000) for _ in range(200_000)]  # ~200 MB of small heap allocations
    pinned = blocks[::1000]  # a few survivors, so the heap cannot simply shrink from its top
    del blocks
    gc.collect()
    before = rss_mb()
    hardware.release_freed_memory()
    assert rss_mb() < before - 100
    assert len(pinned) == 200
