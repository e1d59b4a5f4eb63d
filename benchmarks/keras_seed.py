"""The seed's own Keras model, timed on arrays exported by speed.py (run with the Keras venv).

Runs in its own environment (TensorFlow is never a seqbench dependency): prints one JSON line.
"""

import argparse
import json
import os
import resource
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arrays", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(args.threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = "1"

    import keras
    import numpy as np
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(args.seed)
    data = np.load(args.arrays)
    x_train, y_train, x_test, y_test = (
        data["x_train"],
        data["y_train"],
        data["x_test"],
        data["y_test"],
    )

    # The seed model, verbatim: Embedding(5000, 32) -> LSTM(100) -> Dense(1, sigmoid), Adam, batch 64.
    model = keras.Sequential(
        [
            keras.Input(shape=(x_train.shape[1],)),
            keras.layers.Embedding(5000, 32),
            keras.layers.LSTM(100),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    times: list[float] = []
    started = time.perf_counter()
    model.fit(
        x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0, callbacks=[EpochTimes()]
    )
    fit_seconds = time.perf_counter() - started
    _, test_acc = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    print(
        json.dumps(
            {
                "mode": "keras",
                "seed": args.seed,
                "fit_seconds": fit_seconds,
                "epoch_seconds": times,
                "test_acc": float(test_acc),
                "tokens": int(x_train.size) * args.epochs,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
            }
        )
    )


if __name__ == "__main__":
    main()
