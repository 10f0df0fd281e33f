"""The consumer loop a careful engineer writes by hand (bench_stream.py's baseline): confluent-kafka, batch consume,
JSON rows to a DataFrame, predict_proba, produce, flush, then commit (at least once, as mlops stream does).

    python benchmarks/stream_floor.py BROKERS IN OUT GROUP MODEL.joblib MAX_MESSAGES

No input contract, no dead-letter topic, no metrics, no alias: the floor for this stack. A message that is not JSON
stops it, as such loops do. It predicts with one BLAS/OpenMP thread, as mlops stream does (threadpoolctl): on 2
busy cores a 2-thread fork-join per batch was up to 10 times slower, and a careful engineer measures that.
"""

from __future__ import annotations

import json
import sys

import joblib
import numpy as np
import pandas as pd
from confluent_kafka import Consumer, Producer, TopicPartition
from threadpoolctl import threadpool_limits

sys.path.insert(0, "sample_data")
from train import FEATURES  # noqa: E402


def main() -> None:
    brokers, source, out, group, model_path, max_messages = sys.argv[1:7]
    limit = int(max_messages)
    threadpool_limits(1)
    model = joblib.load(model_path)
    classes = model.classes_.tolist()
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 1000,
            "heartbeat.interval.ms": 333,
        }  # fmt: skip
    )
    producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    consumer.subscribe([source])
    done = 0
    while limit <= 0 or done < limit:
        messages = [m for m in consumer.consume(500, 0.1) if m.error() is None]
        if not messages:
            continue
        frame = pd.DataFrame([json.loads(m.value()) for m in messages], columns=FEATURES)
        proba = model.predict_proba(frame)
        labels = np.asarray(classes)[proba.argmax(axis=1)].tolist()
        for message, label, row in zip(messages, labels, proba.tolist(), strict=True):
            body = {"key": message.key().decode(), "prediction": label}
            body.update({f"proba_{c}": p for c, p in zip(classes, row, strict=True)})
            body.update(topic=message.topic(), partition=message.partition(), offset=message.offset())
            producer.produce(out, json.dumps(body).encode(), message.key())
        if producer.flush(30):
            raise SystemExit("not acknowledged")
        last = {(m.topic(), m.partition()): m.offset() for m in messages}
        consumer.commit(offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()], asynchronous=False)
        done += len(messages)
    consumer.close()


if __name__ == "__main__":
    main()
