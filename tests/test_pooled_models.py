"""The pooled bidirectional models beyond the seeds (``model=bilstm_pool`` / ``bigru_pool`` /
``bigru_ngram``): shapes, parameter counts, padding that never reaches the pooled state (pre
and post), the n-gram bag, and per-submodule learning rates."""

import pytest
import torch
from hydra.utils import instantiate

from helpers import make_config, tiny
from seqbench.models import PooledRNNEncoder, SequenceClassifier
from seqbench.models.classifier import count_trainable
from seqbench.models.ngrams import HashedNgramBag
from seqbench.models.pooled import left_align
from seqbench.serving.predict import load_predictor
from seqbench.train import train
from seqbench.training.task import ClassificationTask, build_task

POOLED = ["bilstm_pool", "bigru_pool", "bigru_ngram"]


def rnn_params(gates: int, inputs: int, units: int) -> int:
    """PyTorch's count for one direction of one layer: ``gates`` blocks, two biases each."""
    return gates * (units * (inputs + units) + 2 * units)


# Embedding(20000, 64), two directions of width 64, max+mean pooling (4 x 64) -> Dense(1).
EXPECTED_PARAMS = {
    "bilstm_pool": 20000 * 64 + 2 * rnn_params(4, 64, 64) + (4 * 64 + 1),
    "bigru_pool": 20000 * 64 + 2 * rnn_params(3, 64, 64) + (4 * 64 + 1),
    # bigru_pool over a 40000-word vocabulary, plus a bag: 16-dim vectors for every word and
    # for 2^20 bigram buckets, appended to the pooled vector (4 x 64 + 16) -> Dense(1).
    "bigru_ngram": 40000 * 64
    + 2 * rnn_params(3, 64, 64)
    + 40000 * 16
    + 2**20 * 16
    + (4 * 64 + 16 + 1),
}


def build(arch: str, tmp_path, *overrides: str) -> SequenceClassifier:
    cfg = make_config(tmp_path, [f"model={arch}", *overrides])
    return instantiate(cfg.model.net)


@pytest.mark.parametrize("arch", POOLED)
def test_output_shape_and_parameter_count(arch, tmp_path):
    net = build(arch, tmp_path)
    out = net(torch.randint(0, 20000, (4, 17)), torch.tensor([17, 5, 9, 1]))
    assert out.shape == (4,)
    assert count_trainable(net) == EXPECTED_PARAMS[arch]


def test_conv_front_end_stacking_and_pooling_choices_change_the_counts():
    conv = PooledRNNEncoder(
        vocab_size=100,
        embedding_dim=16,
        hidden_size=8,
        num_layers=2,
        conv_filters=12,
        conv_kernel_size=5,
    )
    expected = (
        100 * 16
        + (16 * 12 * 5 + 12)
        + 2 * rnn_params(4, 12, 8)  # first layer reads the conv's 12 filters
        + 2 * rnn_params(4, 16, 8)  # second layer reads both directions (2 x 8)
    )
    assert count_trainable(conv) == expected and conv.output_size == 4 * 8
    assert (
        PooledRNNEncoder(vocab_size=100, embedding_dim=16, hidden_size=8, pooling="max").output_size
        == 16
    )
    net = SequenceClassifier(
        PooledRNNEncoder(vocab_size=100, embedding_dim=16, hidden_size=8, cell="gru"), num_classes=5
    )
    assert net(torch.randint(0, 100, (3, 7)), torch.tensor([7, 3, 1])).shape == (3, 5)
    with pytest.raises(ValueError, match="lstm, gru"):
        PooledRNNEncoder(vocab_size=100, cell="rnn")
    with pytest.raises(ValueError, match="max_mean, max, mean"):
        PooledRNNEncoder(vocab_size=100, pooling="attention")


def test_keras_init_covers_the_gru(tmp_path):
    gru = build("bigru_pool", tmp_path).encoder.layers[0].forward_rnn
    assert all(torch.all(getattr(gru, name) == 0) for name in ("bias_ih_l0", "bias_hh_l0"))
    w_hh = gru.weight_hh_l0  # (3H, H) with orthonormal columns
    assert torch.allclose(w_hh.T @ w_hh, torch.eye(gru.hidden_size), atol=1e-4)


def test_left_align_moves_pre_padding_to_the_end():
    x = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8]]).unsqueeze(-1)
    assert left_align(x, torch.tensor([3, 5])).squeeze(-1).tolist() == [
        [1, 2, 3, 0, 0],
        [4, 5, 6, 7, 8],
    ]


@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize(
    "arch, extra",
    [
        ("bilstm_pool", []),
        ("bigru_pool", []),
        ("bilstm_pool", ["model.net.encoder.conv_filters=16", "model.net.encoder.num_layers=2"]),
        ("bigru_ngram", ["model.net.encoder.ngram_buckets=5000"]),
    ],
)
def test_padding_never_reaches_the_pooled_state(arch, extra, padding, tmp_path):
    """A review scores the same alone and in a batch with a much longer review, for both
    padding sides (pre-padded batches are left-aligned before the recurrent layers)."""
    torch.manual_seed(0)
    net = build(arch, tmp_path, f"data.padding={padding}", *extra).eval()
    short = torch.randint(3, 20000, (13,))
    short[0] = 1
    long = torch.randint(3, 20000, (200,))
    batch = torch.zeros(2, 200, dtype=torch.long)
    if padding == "post":
        batch[0, :13] = short
    else:
        batch[0, -13:] = short
    batch[1] = long
    with torch.no_grad():
        alone = net(short.unsqueeze(0), torch.tensor([13]))
        together = net(batch, torch.tensor([13, 200]))
        # and the pads' values do not matter either (whatever id the pads carry)
        batch[0][batch[0] == 0] = 7
        junk_pads = net(batch, torch.tensor([13, 200]))
    torch.testing.assert_close(together[0:1], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(junk_pads, together, atol=1e-5, rtol=1e-5)


def test_the_bag_tells_word_order_apart_only_through_its_bigrams():
    """ "not good , bad" and "bad , good not" share their words: only the bigrams differ."""
    torch.manual_seed(0)
    bag = HashedNgramBag(vocab_size=50, buckets=97, dim=4)
    forward, backward = torch.tensor([[1, 10, 11, 12]]), torch.tensor([[1, 12, 11, 10]])
    length = torch.tensor([4])
    ids = bag.bigram_ids(torch.randint(0, 50, (8, 30)))
    assert ids.shape == (8, 29) and int(ids.min()) >= 0 and int(ids.max()) < 97
    with torch.no_grad():
        assert not torch.allclose(bag(forward, length), bag(backward, length))
        bag.bigrams.weight.zero_()  # words alone: a bag, blind to order
        torch.testing.assert_close(bag(forward, length), bag(backward, length))
    with pytest.raises(ValueError, match="at least 1"):
        HashedNgramBag(50, buckets=0)


def test_lr_scales_give_a_submodule_its_own_rate_and_name_what_exists(tmp_path):
    cfg = make_config(tmp_path, ["model=bigru_ngram", "model.net.encoder.ngram_buckets=64"])
    task = build_task(cfg)
    optimizer = task.configure_optimizers()  # no scheduler in bigru_ngram: the optimiser alone
    base, bag = optimizer.param_groups
    assert base["lr"] == pytest.approx(cfg.model.optimizer.lr)
    assert bag["lr"] == pytest.approx(cfg.model.lr_scales.ngrams * cfg.model.optimizer.lr)
    assert bag["lr"] > base["lr"]
    bag_params = {id(p) for p in task.net.encoder.ngrams.parameters()}
    assert {id(p) for p in bag["params"]} == bag_params
    assert not bag_params & {id(p) for p in base["params"]}
    wrong = ClassificationTask(task.net, optimizer=task.optimizer_factory, lr_scales={"bag": 2.0})
    with pytest.raises(ValueError, match=r"does not have; its submodules: .*'ngrams'"):
        wrong.configure_optimizers()


def test_bigru_ngram_trains_end_to_end_and_its_bag_learns(tmp_path):
    """A real (small) run, logged as an MLflow model whose bag has learned (moved from its
    initial vectors) and that scores raw text like any other."""
    cfg = make_config(
        tmp_path,
        [
            "model=bigru_ngram",
            "model.net.encoder.ngram_buckets=4096",
            *tiny(epochs=2),
        ],
    )
    torch.manual_seed(cfg.seed)
    before = instantiate(cfg.model.net).encoder.ngrams.bigrams.weight.detach().clone()
    result = train(cfg)
    assert 0.0 <= result.metrics["test/acc"] <= 1.0
    predictor = load_predictor(result.run_id, cfg.logger.tracking_uri, "cpu")
    after = predictor.net.encoder.ngrams.bigrams.weight.detach()
    assert after.shape == before.shape and not torch.allclose(after, before)
    assert len(predictor.predict(["5 6 7", "7 6 5"])) == 2
