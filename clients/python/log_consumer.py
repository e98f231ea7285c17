"""A consumer of eventline's event log written apart from the Rust code: it knows the log only
through docs/asyncapi.yaml, and checks messages against it.

    log_consumer.py fixtures <asyncapi.yaml> <dir>           every *.json envelope in <dir>
    log_consumer.py topic <asyncapi.yaml> <brokers> <topic>  every message of <topic>, from the start

For each message: its type comes from the `event-type` header, and the key, the headers and the
value must match that message's schemas in the document (JSON Schema draft-07, formats checked);
the key must be the envelope's `aggregateId` and the `event-id` header its `eventId`. Prints a
summary; exits 1 on the first message that does not conform, naming it. `tests/log_contract.rs`
runs both modes in `make test`.
"""

import json
import pathlib
import sys

import yaml
from jsonschema import Draft7Validator, FormatChecker


class Contract:
    def __init__(self, path):
        document = yaml.safe_load(pathlib.Path(path).read_text())
        self.schemas = document["components"]["schemas"]
        self.messages = document["components"]["messages"]

    def validator(self, schema):
        # References are `#/components/schemas/<name>`: give each schema the components as its root.
        root = dict(schema, components={"schemas": self.schemas})
        return Draft7Validator(root, format_checker=FormatChecker())

    def payload_errors(self, event_type, payload):
        message = self.messages.get(event_type)
        if message is None:
            return [f"no message {event_type!r} in the contract"]
        return [e.message for e in self.validator(message["payload"]).iter_errors(payload)]

    def message_errors(self, key, headers, value):
        event_type = headers.get("event-type")
        message = self.messages.get(event_type)
        if message is None:
            return [f"event-type header {event_type!r} names no message of the contract"]
        errors = [f"header: {e.message}" for e in self.validator(message["headers"]).iter_errors(headers)]
        key_schema = message["bindings"]["kafka"]["key"]
        errors += [f"key: {e.message}" for e in self.validator(key_schema).iter_errors(key)]
        try:
            payload = json.loads(value)
        except (TypeError, ValueError) as error:
            return errors + [f"value is not JSON: {error}"]
        errors += [f"value: {e}" for e in self.payload_errors(event_type, payload)]
        if isinstance(payload, dict):
            if payload.get("aggregateId") != key:
                errors.append(f"key {key!r} is not the aggregateId {payload.get('aggregateId')!r}")
            if payload.get("eventId") != headers.get("event-id"):
                errors.append("the event-id header is not the envelope's eventId")
        return errors


def check_fixtures(contract, directory):
    files = sorted(pathlib.Path(directory).glob("*.json"))
    if not files:
        sys.exit(f"no fixtures in {directory}")
    for path in files:
        payload = json.loads(path.read_text())
        errors = contract.payload_errors(payload.get("eventType"), payload)
        if errors:
            sys.exit(f"{path.name} does not conform: {errors}")
    print(f"{len(files)} fixtures conform")


def check_topic(contract, brokers, topic):
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"{topic}.contract-check",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = metadata.topics[topic].partitions
    ends = {}
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if high > low:
            ends[partition] = high
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    counts, done = {}, set()
    while len(done) < len(ends):
        message = consumer.poll(10)
        if message is None:
            sys.exit(f"the log stopped delivering before its end ({counts})")
        if message.error():
            sys.exit(f"reading the log: {message.error()}")
        where = f"{topic}[{message.partition()}]@{message.offset()}"
        key = message.key().decode("utf-8") if message.key() is not None else None
        headers = {k: v.decode("utf-8") for k, v in (message.headers() or [])}
        errors = contract.message_errors(key, headers, message.value())
        if errors:
            sys.exit(f"{where} does not conform: {errors}")
        counts[headers["event-type"]] = counts.get(headers["event-type"], 0) + 1
        if message.offset() + 1 >= ends[message.partition()]:
            done.add(message.partition())
    consumer.close()
    total = sum(counts.values())
    print(json.dumps({"messages": total, "by_type": counts}))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "fixtures":
        check_fixtures(Contract(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "topic":
        check_topic(Contract(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
