#!/usr/bin/env python3
"""A client nobody here wrote (pika) on the other side of coolmq's messages.

  pika_client.py publish URL QUEUE   publish one message with every property and typed headers
  pika_client.py get URL QUEUE       take one message and print its properties as JSON
  pika_client.py extreme URL QUEUE   publish legal but extreme values, then 20 ordinary messages
"""
import decimal
import json
import sys
import time

import pika


def publish(url, queue):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.confirm_delivery()
    props = pika.BasicProperties(
        message_id="pika-1",
        correlation_id="corr-pika",
        reply_to="pika.replies",
        content_type="application/json",
        content_encoding="utf-8",
        type="PikaEvent",
        priority=5,
        delivery_mode=2,
        expiration="600000",
        timestamp=1700000000,
        app_id="pika-test",
        headers={
            "str": "hello",
            "int": 42,
            "big": 2**40,
            "neg": -7,
            "bool": True,
            "decimal": decimal.Decimal("2.5"),  # pika cannot encode floats
            "list": [1, "two"],
            "map": {"inner": "x"},
        },
    )
    ch.basic_publish(exchange="", routing_key=queue, body=b'{"from":"pika"}', properties=props, mandatory=True)
    conn.close()


def extreme(url, queue):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.confirm_delivery()
    deep = "bottom"
    for _ in range(60):
        deep = {"d": deep}
    hostile = [
        # The largest timestamp the 64-bit property can carry.
        pika.BasicProperties(message_id="x-timestamp", timestamp=2**64 - 1, delivery_mode=2),
        pika.BasicProperties(message_id="x-headers", delivery_mode=2, user_id="guest",
                             cluster_id="c-1", app_id="a" * 255, headers={
            "deep": deep,
            "bytes": b"\xff\xfe\x00",
            "max": 2**63 - 1,
            "min": -(2**63),
            "long_key_" + "k" * 200: "v",
        }),
        pika.BasicProperties(delivery_mode=2, priority=255),  # no message id at all
    ]
    for props in hostile:
        ch.basic_publish(exchange="", routing_key=queue, body=b"\x00\xff", properties=props, mandatory=True)
    for i in range(20):
        ch.basic_publish(exchange="", routing_key=queue, body=b"fine",
                         properties=pika.BasicProperties(message_id="ok-%d" % i, delivery_mode=2),
                         mandatory=True)
    conn.close()


def plain(v):
    if isinstance(v, bytes):
        return {"bytes": list(v)}
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def get(url, queue):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    for _ in range(100):
        method, props, body = ch.basic_get(queue=queue, auto_ack=True)
        if method is not None:
            break
        time.sleep(0.1)
    else:
        sys.exit("no message")
    print(json.dumps({
        "body": list(body),
        "message_id": props.message_id,
        "correlation_id": props.correlation_id,
        "reply_to": props.reply_to,
        "content_type": props.content_type,
        "type": props.type,
        "priority": props.priority,
        "delivery_mode": props.delivery_mode,
        "expiration": props.expiration,
        "timestamp": props.timestamp,
        "headers": plain(props.headers or {}),
    }))
    conn.close()


if __name__ == "__main__":
    mode, url, queue = sys.argv[1:4]
    {"publish": publish, "get": get, "extreme": extreme}[mode](url, queue)
