"""The n-gram bag: hashing kept stable, padding-invariant scores, naive-Bayes statistics, the
row-sparse optimiser (equal to SparseAdam, resumed exactly) and a k-mer task only it can learn."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from mlflow import MlflowClient
from torch import nn

from helpers import make_config
from seqbench.data.datamodule import SyntheticDataModule
from seqbench.data.motifs import kmers, motif_pair, write_motif_task
from seqbench.models import NgramBagEncoder, SequenceClassifier
from seqbench.models.ngrams import _HASH, HashedNgramBag, ngram_ids
from seqbench.train import train
from seqbench.training.callbacks import RandomStateInCheckpoint
from seqbench.training.optimizers import (
    RowSparseAdam,
    SparseDenseOptimizer,
    build_optimizer,
    sparse_parameters,
)
from seqbench.training.task import ClassificationTask


def test_bigrams_hash_as_bigru_ngram_was_trained_and_longer_ngrams_differ():
    tokens = torch.tensor([[5, 7, 9, 11, 5, 7]])
    expected = ((tokens[:, :-1] * 1000 + tokens[:, 1:]) * _HASH) % 4096
    assert torch.equal(ngram_ids(tokens, 2, 1000, 4096), expected)
    trigrams = ngram_ids(tokens, 3, 1000, 4096)
    assert trigrams.shape == (1, 4) and trigrams[0, 0] != expected[0, 0]
    assert trigrams[0, 0] != ngram_ids(tokens, 4, 1000, 4096)[0, 0]
    alone = ngram_ids(torch.tensor([[5, 7, 9]]), 3, 1000, 4096)  # the same run, anywhere
    assert trigrams[0, 0] == alone[0, 0]


def test_the_bigram_bag_is_unchanged_by_the_ngram_generalisation():
    torch.manual_seed(0)
    bag = HashedNgramBag(100, 1000, 4)
    tokens, lengths = torch.randint(3, 100, (3, 10)), torch.tensor([10, 5, 1])
    real = (torch.arange(10)[None] < lengths[:, None]).unsqueeze(-1)
    pairs = ((tokens[:, :-1] * 100 + tokens[:, 1:]) * _HASH) % 1000
    total = (bag.words(tokens) * real).sum(1) + (bag.bigrams(pairs) * real[:, 1:]).sum(1)
    assert torch.allclose(bag(tokens, lengths), total / (2 * lengths - 1).unsqueeze(1))


@pytest.mark.parametrize("weighting", ["mean", "nb"])
@pytest.mark.parametrize("padding", ["pre", "post"])
def test_a_sequence_scores_the_same_alone_and_beside_a_longer_one(weighting, padding):
    torch.manual_seed(0)
    encoder = NgramBagEncoder(50, buckets=512, dim=4, max_n=3, weighting=weighting, padding=padding)
    net = SequenceClassifier(encoder).eval()
    short, long = torch.randint(3, 50, (5,)), torch.randint(3, 50, (12,))
    if weighting == "nb":
        batch = torch.stack([torch.cat([long[:5], torch.zeros(7, dtype=torch.long)]), long])
        encoder.observe(batch, torch.tensor([5, 12]), torch.tensor([0, 1]))
        encoder.finish_observing()

    def padded(seqs):
        width = max(len(s) for s in seqs)
        rows = []
        for s in seqs:
            pad = torch.zeros(width - len(s), dtype=torch.long)
            rows.append(torch.cat([pad, s] if padding == "pre" else [s, pad]))
        return torch.stack(rows), torch.tensor([len(s) for s in seqs])

    alone = net(*padded([short]))
    beside = net(*padded([short, long]))
    assert torch.allclose(alone[0], beside[0], atol=1e-6)


def test_naive_bayes_ratios_count_each_ngram_once_per_sequence():
    encoder = NgramBagEncoder(20, buckets=64, dim=1, max_n=2, weighting="nb", padding="post")
    assert encoder.needs_statistics
    tokens = torch.tensor([[5, 5, 5, 6], [7, 8, 0, 0], [5, 9, 0, 0]])
    encoder.observe(tokens, torch.tensor([4, 2, 2]), torch.tensor([1, 0, 1]))
    encoder.finish_observing()
    ratio = encoder.nb_ratio
    assert not encoder.needs_statistics
    # token 5: in both positive sequences, no negative one; token 7 only in the negative one
    assert ratio[5] > ratio[6] > 0 > ratio[7]
    # counted once per sequence however often it repeats: 5 (3x in one row) as often as 9 (1x)
    positives = 1 + 2  # alpha + sequences
    assert ratio[5] - ratio[9] == pytest.approx(torch.log(torch.tensor(positives / 2.0)).item())
    state = encoder.state_dict()  # saved with the weights: a resume never counts again
    fresh = NgramBagEncoder(20, buckets=64, dim=1, max_n=2, weighting="nb", padding="post")
    fresh.load_state_dict(state)
    assert not fresh.needs_statistics and torch.equal(fresh.nb_ratio, ratio)


@pytest.mark.parametrize("init", ["keras", "torch"])
def test_a_naive_bayes_bag_starts_from_zero_evidence_and_a_mean_bag_does_not(init):
    """Whatever the scheme, the nb tables start at 0 (the first logit is the bias; on IMDB a
    random start cost 1.2 points of validation accuracy); the fastText mean keeps the scheme's."""

    def tables(weighting):
        net = SequenceClassifier(
            NgramBagEncoder(20, buckets=64, dim=2, weighting=weighting), init=init
        )
        return net, [net.encoder.bag.words.weight, net.encoder.bag.bigrams.weight]

    net, nb = tables("nb")
    assert all(torch.count_nonzero(t) == 0 for t in nb)
    assert torch.count_nonzero(net.head.weight) > 0  # the head still learns from the first step
    _, mean = tables("mean")
    assert all(torch.count_nonzero(t) == t.numel() for t in mean)


def test_nb_refuses_more_than_two_classes_and_dropout_without_nb():
    with pytest.raises(ValueError, match="weighting='nb'"):
        NgramBagEncoder(20, weighting="nb", num_classes=3)
    with pytest.raises(ValueError, match="ngram_dropout"):
        NgramBagEncoder(20, weighting="mean", ngram_dropout=0.5)


def test_row_sparse_adam_updates_rows_as_sparse_adam_does():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(1000, 3))
    b = nn.Parameter(a.detach().clone())
    reference, ours = torch.optim.SparseAdam([a], lr=0.05), RowSparseAdam([b], lr=0.05)
    for _ in range(4):
        rows = torch.randint(0, 1000, (300,))  # repeated rows: uncoalesced, as embeddings give
        grad = torch.sparse_coo_tensor(rows[None], torch.randn(300, 3), (1000, 3))
        a.grad, b.grad = grad, grad.clone()
        reference.step()
        ours.step()
    assert torch.allclose(a, b, atol=1e-6)
    untouched = torch.ones(1000, dtype=torch.bool)
    untouched[rows] = False
    b.grad = torch.sparse_coo_tensor(rows[:1][None], torch.ones(1, 3), (1000, 3))
    before = b.detach().clone()
    ours.step()
    assert torch.equal(b[untouched], before[untouched])


def _bag_task(seed: int) -> ClassificationTask:
    torch.manual_seed(seed)
    encoder = NgramBagEncoder(32, buckets=4096, dim=8, max_n=3, padding="pre")
    return ClassificationTask(
        SequenceClassifier(encoder, dropout=0.2),
        optimizer=functools.partial(torch.optim.Adam, lr=0.01),
        scheduler=functools.partial(torch.optim.lr_scheduler.ExponentialLR, gamma=0.5),
    )


def _fit(task, tmp_path, ckpt=None):
    from lightning.pytorch.callbacks import ModelCheckpoint

    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1),
            RandomStateInCheckpoint(),  # dropout continues as in an uninterrupted run
        ],
        default_root_dir=tmp_path,
        deterministic=True,
    )
    L.seed_everything(1, verbose=False)
    trainer.fit(task, SyntheticDataModule(n_train=256, n_test=64, batch_size=32), ckpt_path=ckpt)
    return trainer


def test_the_sparse_bag_uses_both_optimisers_and_resumes_exactly(tmp_path):
    straight = _bag_task(0)
    assert sparse_parameters(straight.net) == {
        straight.net.encoder.bag.words.weight,
        straight.net.encoder.bag.bigrams.weight,
    }
    optimizer = _fit(straight, tmp_path / "a").optimizers[0]
    assert isinstance(optimizer, SparseDenseOptimizer)
    assert isinstance(optimizer.sparse, RowSparseAdam) and optimizer.sparse.state
    (first_epoch,) = (tmp_path / "a" / "ckpt").glob("epoch=0-*.ckpt")
    resumed = _bag_task(99)  # other initial weights: everything must come from the checkpoint
    _fit(resumed, tmp_path / "b", ckpt=str(first_epoch))
    for (name, x), (_, y) in zip(
        resumed.state_dict().items(), straight.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), name


def test_the_dense_path_is_untouched_without_sparse_tables():
    net = SequenceClassifier(NgramBagEncoder(32, buckets=64, dim=4, sparse=False))
    optimizer = build_optimizer(
        [{"params": list(net.parameters())}],
        functools.partial(torch.optim.Adam, lr=0.01),
        sparse_parameters(net),
    )
    assert type(optimizer) is torch.optim.Adam


def test_motifs_differ_only_in_kmers_of_four_and_longer():
    negative, positive = motif_pair()
    assert negative[:2] == positive[:2] and negative[-2:] == positive[-2:]
    for k in (1, 2, 3):
        assert kmers(negative, k) == kmers(positive, k)
    assert kmers(negative, 4) != kmers(positive, 4)


@pytest.mark.slow
def test_only_a_bag_with_long_kmers_learns_the_motif_task(tmp_path):
    path = tmp_path / "data" / "motifs.csv"
    write_motif_task(path, n=800, length=60)
    accuracy = {}
    for max_n in (3, 6):
        cfg = make_config(
            tmp_path,
            [
                "model=ngram_bag",
                "data=text_files",
                f"data.train={path}",
                "data.tokenizer=char",
                "data.max_len=100",
                "model.vocab_size=8",
                f"model.net.encoder.max_n={max_n}",
                "model.net.encoder.buckets=65536",
                "model.optimizer.lr=0.02",
                "trainer.max_epochs=5",
                f"logger.run_name=kmers{max_n}",
            ],
        )
        result = train(cfg)
        run = MlflowClient(cfg.logger.tracking_uri).get_run(result.run_id)
        accuracy[max_n] = run.data.metrics["test/acc"]
    assert accuracy[6] >= 0.9, accuracy  # 6-mers hold the motif
    assert accuracy[3] <= 0.65, accuracy  # 1-3-mers are distributed alike in both classes
