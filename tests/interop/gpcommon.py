"""Shared helpers of the interop clients: reader lookup, hex keys, GET STATUS parsing.

Written for the tsm interop tests; they drive third-party GlobalPlatform hosts (yubikit,
Py-GP) against the simulated card through pcscd and print what they saw as JSON on stdout.
"""

import json
import sys


def die(msg):
    print(f"{sys.argv[0]}: {msg}", file=sys.stderr)
    sys.exit(1)


def find_reader(name):
    """The pyscard reader whose name contains `name`."""
    from smartcard.System import readers

    found = [r for r in readers() if name in str(r)]
    if not found:
        die(f"no reader matching {name!r} (readers: {[str(r) for r in readers()]})")
    return found[0]


def hexbytes(text):
    return bytes.fromhex(text.replace(" ", ""))


def parse_tlvs(data):
    """BER-TLV list (tags up to 2 bytes, lengths up to 3 bytes) -> [(tag, value)]."""
    out = []
    i = 0
    while i < len(data):
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:
            tag = (tag << 8) | data[i]
            i += 1
        ln = data[i]
        i += 1
        if ln == 0x81:
            ln = data[i]
            i += 1
        elif ln == 0x82:
            ln = (data[i] << 8) | data[i + 1]
            i += 2
        if i + ln > len(data):
            raise ValueError(f"TLV {tag:X} runs past the end ({ln} bytes at {i} of {len(data)})")
        out.append((tag, data[i : i + ln]))
        i += ln
    return out


def parse_status(data):
    """GET STATUS tagged response (E3 templates, GPCS 2.3 §11.4.3.2) -> entries."""
    entries = []
    for tag, value in parse_tlvs(data):
        if tag != 0xE3:
            continue
        e = {"modules": []}
        for t, v in parse_tlvs(value):
            if t == 0x4F:
                e["aid"] = v.hex().upper()
            elif t == 0x9F70:
                e["lifecycle"] = v[0]
            elif t == 0xC5:
                e["privileges"] = v.hex().upper()
            elif t == 0x84:
                e["modules"].append(v.hex().upper())
            elif t == 0xCC:
                e["sd"] = v.hex().upper()
        entries.append(e)
    return entries


def emit(obj):
    print(json.dumps(obj, sort_keys=True), flush=True)
