"""Py-GP (a pure-Python GlobalPlatform host) against a card in a PC/SC reader.

Authenticates to the ISD with SCP02 or SCP03 at the given security level, runs one action and
prints JSON on stdout:
  list                      {"isd": [...], "apps": [...], "load_files": [...]}
  install CAP               INSTALL [for load], LOAD, INSTALL [for install and make selectable]
                            of the CAP's first applet, then the list
  delete AID [AID...]       DELETE each AID (P2 00), then the list
  delete-package AID        DELETE the load file and its applications (P2 80), then the list

  python pygp_client.py --scp 03 --level 33 --kvn 30 --enc .. --mac .. --dek .. install x.cap

Py-GP's quirks: SCP02 needs the implementation option from the caller (the INITIALIZE
UPDATE response does not carry it); R-MAC is not implemented for SCP02 (levels 01 and 03 only);
Le is appended after the C-MAC when the plain command had one; its default key version is 21.
"""

import argparse
import sys

import sys as _sys

import pygp.loadfile as loadfile
import pygp.pygp as gp

# `pygp.gp` is shadowed by the gp_functions module that pygp/__init__ star-imports, so
# `import pygp.gp.gp_functions` fails: take the loaded module itself.
gpf = _sys.modules["pygp.gp.gp_functions"]
from gpcommon import die, emit, find_reader, parse_status


def get_status(p1):
    status, entries = gpf.get_status(p1)
    if status["errorStatus"] != 0:
        # 6A88: nothing of that kind; Py-GP reports it as an error status
        if gpf.last_status() == "6A88":
            return []
        raise RuntimeError(f"GET STATUS {p1}: {status['errorMessage']} (SW {gpf.last_status()})")
    # Re-parse with our parser to keep every field (Py-GP drops some) and check the encoding.
    return [normalize(e) for e in entries or []]


def normalize(e):
    return {
        "aid": e["aid"].upper(),
        "lifecycle": int(e["lifecycle"], 16),
        "privileges": (e.get("privileges") or "").upper(),
        "modules": [e["module_aid"].upper()] if e.get("module_aid") else [],
    }


def listing():
    return {"isd": get_status("80"), "apps": get_status("40"), "load_files": get_status("10")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reader", default="Virtual PCD 00 00")
    ap.add_argument("--isd", default="A000000151000000")
    ap.add_argument("--scp", choices=["02", "03"], required=True)
    ap.add_argument("--scpi", help="SCP02 implementation option, hex (e.g. 55); SCP03 reads it from the card")
    ap.add_argument("--level", default="03", help="security level, hex: 01, 03 (SCP02/03), 13, 33 (SCP03)")
    ap.add_argument("--kvn", required=True, help="key version number, hex")
    ap.add_argument("--enc", required=True)
    ap.add_argument("--mac", required=True)
    ap.add_argument("--dek", required=True)
    ap.add_argument("--block", type=int, default=32, help="LOAD block size")
    ap.add_argument("-v", "--verbose", action="store_true", help="Py-GP's APDU trace on stderr")
    ap.add_argument("action", choices=["list", "install", "delete", "delete-package"])
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()

    gp.set_log_mode(gp.CONSOLE_TRACE | gp.DEBUG_LEVEL | gp.APDU if a.verbose else gp.NONE)
    gp.stop_on_error(True)
    reader = str(find_reader(a.reader))
    out = {"client": "pygp", "scp": a.scp, "level": a.level, "action": a.action}
    try:
        gp.terminal(reader)
        gp.card()  # connects, SELECT ISD by default (empty AID)
        if a.isd:
            gp.select(a.isd)
        scpi = a.scpi.upper() if a.scpi else None
        gp.auth(a.enc, a.mac, a.dek, a.scp, scpi, a.kvn.upper(), securitylevel=int(a.level, 16))
        if a.action == "install":
            if len(a.args) != 1:
                die("install takes one CAP file")
            cap = a.args[0]
            lf = loadfile.Loadfile(cap)
            pkg = lf.get_aid().upper()
            applets = lf.get_applets_aid() if hasattr(lf, "get_applets_aid") else None
            applet = (applets[0] if applets else None) or applet_aid_from_cap(lf)
            gp.install_load(cap, a.isd)
            gp.load_file(cap, a.block)
            gp.install(True, pkg, applet, applet)
            out["installed"] = {"package": pkg, "applet": applet.upper()}
        elif a.action == "delete":
            for aid in a.args:
                gp.delete(aid)
            out["deleted"] = [x.upper() for x in a.args]
        elif a.action == "delete-package":
            for aid in a.args:
                gp.delete_package(aid)
            out["deleted"] = [x.upper() for x in a.args]
        out.update(listing())
    except BaseException as e:  # Py-GP raises BaseException
        if isinstance(e, SystemExit):
            raise
        die(f"Py-GP failed: {e} (last SW {gpf.last_status()})")
    finally:
        try:
            gp.close()
        except BaseException:  # noqa: BLE001
            pass
    emit(out)


def applet_aid_from_cap(lf):
    """The first applet AID of the Applet component (Py-GP keeps components as hex text)."""
    comp = lf.components.get("Applet") if hasattr(lf, "components") else None
    if not comp:
        die("the CAP file has no Applet component")
    b = bytes.fromhex(comp)
    # tag 03, size u2, count u1, then per applet: AID length u1, AID, install method offset u2
    n = b[4]
    return b[5 : 5 + n].hex().upper()


if __name__ == "__main__":
    sys.exit(main())
