#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_settlement_store (records over the fixture's store; the
input format is in fuzz_settlement_store.cc and the key layout in settlement/src/keys.h):

    python3 tests/fuzz/make_settlement_store_corpus.py tests/fuzz/corpus/settlement_store
"""
import os
import struct
import sys

PREFIXES = ["s/applied", "r/", "c/", "f/", "l/", "t/", "b/", "y/", "u/", "i/", "k/", "x/", "o/",
            "w/", "tw/", "bw/", "d/", "td/", "bd/", "s/format", "s/options"]


def s(text):  # a string field
    b = text.encode() if isinstance(text, str) else text
    return b.replace(b"\0", b"\0\xff") + b"\0\x01"


def u32(v):
    return struct.pack(">I", v & 0xFFFFFFFF)


def i64(v):
    return struct.pack(">Q", (v ^ (1 << 63)) & 0xFFFFFFFFFFFFFFFF)


def i128(v):
    return (v & ((1 << 128) - 1)).to_bytes(16, "big")


def record(prefix, key, value):
    return bytes([PREFIXES.index(prefix)]) + struct.pack(">H", len(key)) + key + \
        struct.pack(">H", len(value)) + value


def line(inst, alloc, model=1, rate=4500, copay=900, typ=2, kind=0):
    return s(inst) + s(alloc) + u32(model) + i64(rate) + i64(copay) + u32(typ) + u32(kind)


def pool(period, csp, prog=1, model=1):
    return s(period) + s(csp) + u32(prog) + u32(model)


SEEDS = {
    "empty": b"",
    "line-huge": record("l/", s("2026-03") + line("inst\x1f", "a\0b"), i128(1 << 100)),
    "line-garbage-value": record("l/", s("2026-03") + line("x", "y"), b"garbage"),
    "line-bad-key": record("l/", s("2026-03") + b"\0\x02", i128(5)),
    "outage-every-byte": record("d/", pool("2026-03", "csp\x1f") + s("pool") + s(bytes(range(256))),
                                i128((1 << 64) + 7)),
    "touched-outage-and-own-use": record("td/", pool("2026-02", "c") + s("pool") + s("x"), b"") +
    record("tw/", pool("2026-02", "c"), b"") + record("bw/", pool("2026-02", "c"), b"\xff\xff"),
    "touched-line-billed-garbage": record("t/", s("2026-02") + line("i", "a"), b"") +
    record("b/", s("2026-02") + line("i", "a"), b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\x7f"),
    "old-format": record("s/format", b"", b"gpuledger-settlement/1"),
    "applied-short": record("s/applied", b"", b"\x01"),
    "close-frozen-garbage": record("c/", s("2026-03"), i64(3)) + record("f/", s("2026-03"), b"\x0a\xff"),
    "daily-bad-days": record("y/", s("2026-03") + s("csp-a") + u32(0), i128(1)) +
    record("y/", s("2026-03") + s("csp-a") + u32(99), i128(-1)) +
    record("y/", s("2026-03") + s("csp-a") + u32(2), i128(-(1 << 90))),
    "own-use-huge": record("w/", pool("2026-03", "csp-a"), i128(1 << 70)),
    "unpriced-garbage": record("u/", s("2026-03") + i64(1) + u32(0), b"\xff\xff\xff"),
    "outage-record-garbage": record("o/", s("a\x1f") + i64(1), b"\xff"),
}

if __name__ == "__main__":
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
