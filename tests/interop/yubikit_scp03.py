"""yubikit's generic SCP03 host against a GlobalPlatform card in a PC/SC reader.

Opens an SCP03 channel at security level 33 (C-MAC, C-DEC, R-MAC, R-ENC: the only level
yubikit offers) with the given static keys and key version, then lists the card's content with
GET STATUS through the channel and reads the sequence counter (GET DATA C1), and prints it
as JSON:
  {"client": "yubikit", "isd": [...], "apps": [...], "load_files": [...], "sequence_counter": N}

  python yubikit_scp03.py --reader "Virtual PCD 00 00" --isd A000000151000000 --kvn 30 \
      --enc 404142...4F --mac 404142...4F --dek 404142...4F

yubikit sends the key version given in INITIALIZE UPDATE (00 = "any"), no Le on
INITIALIZE UPDATE, EXTERNAL AUTHENTICATE or wrapped commands, and encrypts an empty data field
as one padding block.
"""

import argparse
import logging

from gpcommon import die, emit, find_reader, hexbytes, parse_status
from smartcard.scard import SCARD_RESET_CARD, SCARD_UNPOWER_CARD
from ykman.pcsc import ScardSmartCardConnection
from yubikit.core.smartcard import ApduError, SmartCardProtocol
from yubikit.core.smartcard.scp import KeyRef, Scp03KeyParams, ScpKid, StaticKeys

SW_MORE = 0x6310


def get_status(protocol, p1):
    """GET STATUS P1 with the tagged format (P2 02), following 6310 with P2 03."""
    data = b""
    p2 = 0x02
    while True:
        try:
            data += protocol.send_apdu(0x80, 0xF2, p1, p2, bytes.fromhex("4F00"))
            return parse_status(data)
        except ApduError as e:
            if e.sw == SW_MORE:
                data += e.data
                p2 = 0x03
                continue
            if e.sw == 0x6A88:  # nothing of that kind on the card
                return parse_status(data)
            raise


def sequence_counter(protocol):
    """GET DATA C1 (sequence counter of the default key version) through the channel."""
    data = protocol.send_apdu(0x80, 0xCA, 0x00, 0xC1)
    if len(data) < 3 or data[0] != 0xC1 or data[1] != len(data) - 2:
        die(f"GET DATA C1: unexpected answer {data.hex()}")
    return int.from_bytes(data[2:], "big")


def after(conn, protocol, disposition):
    """Warm reset or power cycle through PC/SC, then one more command through the (old)
    channel: a card must have dropped the session and answer with an error status word."""
    conn.connection.reconnect(disposition=disposition)
    try:
        protocol.send_apdu(0x80, 0xF2, 0x80, 0x02, bytes.fromhex("4F00"))
        return "9000"
    except ApduError as e:
        return f"{e.sw:04X}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reader", default="Virtual PCD 00 00")
    ap.add_argument("--isd", default="A000000151000000")
    ap.add_argument("--kvn", default="00", help="key version number, hex (00: the card picks)")
    ap.add_argument("--enc", required=True)
    ap.add_argument("--mac", required=True)
    ap.add_argument("--dek", required=True)
    ap.add_argument("--reset-check", action="store_true", help="then reset and power-cycle the card through PC/SC and report the status word of a command on the old channel")
    ap.add_argument("-v", "--verbose", action="store_true", help="yubikit's APDU trace on stderr")
    a = ap.parse_args()
    if a.verbose:
        logging.basicConfig(level=5)  # yubikit's TRAFFIC level

    reader = find_reader(a.reader)
    conn = ScardSmartCardConnection(reader.createConnection())
    try:
        protocol = SmartCardProtocol(conn)
        protocol.select(hexbytes(a.isd))
        keys = StaticKeys(hexbytes(a.enc), hexbytes(a.mac), hexbytes(a.dek))
        protocol.init_scp(Scp03KeyParams(ref=KeyRef(ScpKid.SCP03, int(a.kvn, 16)), keys=keys))
        out = {
            "client": "yubikit",
            "scp": "03",
            "level": "33",
            "isd": get_status(protocol, 0x80),
            "apps": get_status(protocol, 0x40),
            "load_files": get_status(protocol, 0x10),
            # GET DATA without a data field: yubikit encrypts the empty field as one block.
            "sequence_counter": sequence_counter(protocol),
        }
        if a.reset_check:
            out["after_reset"] = after(conn, protocol, SCARD_RESET_CARD)
            out["after_unpower"] = after(conn, protocol, SCARD_UNPOWER_CARD)
    except Exception as e:  # noqa: BLE001 - report any failure as the test's message
        die(f"yubikit failed: {type(e).__name__}: {e}")
    finally:
        conn.close()
    emit(out)


if __name__ == "__main__":
    main()
