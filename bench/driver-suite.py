#!/usr/bin/env python3
"""Helper of bench/driver-suite.

  shim     plain-TCP PostgreSQL listener that logs in to the gateway over TLS
           with a token and then relays bytes (the suite speaks NoTls and
           ordinary user names; the gateway wants TLS and a token)
  run      runs every test of a libtest binary in its own process, bounded
           by a timeout, and writes one line per test: name, outcome, the
           first line of its failure message
  compare  prints the figures of two `run` result files and the tests whose
           outcome differs
"""
import argparse
import asyncio
import os
import re
import signal
import ssl
import struct
import subprocess
import sys
import time

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3 = 196608


# --- shim -------------------------------------------------------------------

def log(path, text):
    if path:
        with open(path, "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {text}\n")


async def read_startup(reader, writer):
    """The client's first packet other than SSLRequest/GSSENCRequest (answered 'N')."""
    while True:
        head = await reader.readexactly(8)
        length, code = struct.unpack("!ii", head)
        if length < 8 or length > 10000:
            raise ValueError(f"bad start-up length {length}")
        body = await reader.readexactly(length - 8)
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            writer.write(b"N")
            await writer.drain()
            continue
        return code, body


async def gateway_tls(args):
    """A TLS connection to the gateway (SSLRequest, then the handshake)."""
    reader, writer = await asyncio.open_connection(args.gateway_host, args.gateway_port)
    writer.write(struct.pack("!ii", 8, SSL_REQUEST))
    await writer.drain()
    answer = await reader.readexactly(1)
    if answer != b"S":
        writer.close()
        raise ConnectionError(f"gateway answered {answer!r} to SSLRequest")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # loopback only
    await writer.start_tls(ctx, server_hostname="localhost")
    return reader, writer


def startup_params(body):
    parts = body.split(b"\0")
    params = {}
    i = 0
    while i + 1 < len(parts) and parts[i]:
        params[parts[i].decode()] = parts[i + 1].decode()
        i += 2
    return params


def startup_packet(params):
    body = struct.pack("!i", PROTOCOL_3)
    for k, v in params.items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


async def pump(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        return


def close(writer):
    try:
        writer.close()
    except Exception:
        pass


async def handle(args, token, c_reader, c_writer):
    g_writer = None
    try:
        code, body = await read_startup(c_reader, c_writer)
        if code == CANCEL_REQUEST:
            g_reader, g_writer = await gateway_tls(args)
            g_writer.write(struct.pack("!ii", 16, CANCEL_REQUEST) + body)
            await g_writer.drain()
            await g_reader.read()  # the gateway closes it when done
            log(args.log, "cancel request forwarded")
            return
        if code != PROTOCOL_3:
            log(args.log, f"unknown start-up code {code}")
            return
        params = startup_params(body)
        log(args.log, f"start-up {params}")
        params["user"] = args.user
        params["database"] = args.database
        g_reader, g_writer = await gateway_tls(args)
        g_writer.write(startup_packet(params))
        await g_writer.drain()
        # The gateway asks for the password (the token) first.
        tag = await g_reader.readexactly(1)
        length = struct.unpack("!i", await g_reader.readexactly(4))[0]
        payload = await g_reader.readexactly(length - 4)
        if tag == b"R" and struct.unpack("!i", payload[:4])[0] == 3:
            pw = token.encode() + b"\0"
            g_writer.write(b"p" + struct.pack("!i", len(pw) + 4) + pw)
            await g_writer.drain()
        else:
            c_writer.write(tag + struct.pack("!i", length) + payload)
            await c_writer.drain()
        a = asyncio.create_task(pump(c_reader, g_writer))
        b = asyncio.create_task(pump(g_reader, c_writer))
        done, pending = await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, ValueError) as e:
        log(args.log, f"connection error: {e!r}")
    finally:
        if g_writer is not None:
            close(g_writer)
        close(c_writer)


async def shim_main(args):
    token = open(args.token_file).read().strip()
    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(
        lambda r, w: handle(args, token, r, w), host, int(port), reuse_address=True
    )
    log(args.log, f"listening on {args.listen}")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    log(args.log, "stopped")


def cmd_shim(args):
    host, port = args.gateway.rsplit(":", 1)
    args.gateway_host, args.gateway_port = host, int(port)
    asyncio.run(shim_main(args))


# --- run --------------------------------------------------------------------

def list_tests(binary, ignored=False):
    cmd = [binary, "--list", "--format", "terse"] + (["--ignored"] if ignored else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [l[: -len(": test")] for l in out.splitlines() if l.endswith(": test")]


def failure_line(name, output):
    """First line of the panic message in a libtest failure section."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"thread '{name}'") and " panicked at " in line:
            rest = line.split(" panicked at ", 1)[1]
            # Rust >= 1.73: "panicked at file:line:col:" then the message.
            if not (rest.endswith(":") and i + 1 < len(lines)):
                return rest.strip()
            first = lines[i + 1].strip()
            # An assert_eq! says what differed on the next two lines.
            sides = [l.strip() for l in lines[i + 2 : i + 4] if l.strip().startswith(("left:", "right:"))]
            return first + (f" ({', '.join(sides)})" if sides else "")
    for line in lines:
        if line.startswith("Error") or "error" in line.lower():
            return line.strip()
    return ""


def cmd_run(args):
    # SIGTERM ends the run; subprocess.run kills the test it is waiting for.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tests = list_tests(args.binary)
    ignored = set(list_tests(args.binary, ignored=True))
    if args.filter:
        tests = [t for t in tests if any(f in t for f in args.filter)]
    env = dict(os.environ, RUST_BACKTRACE="0")
    with open(args.log, "w") as logf, open(args.out, "w") as out:
        for name in tests:
            if name in ignored:
                out.write(f"{name}\tignored\t\n")
                continue
            t0 = time.monotonic()
            try:
                p = subprocess.run(
                    [args.binary, "--exact", name, "--test-threads=1"],
                    capture_output=True, text=True, timeout=args.timeout, env=env,
                )
                text = p.stdout + p.stderr
                m = re.search(rf"^test {re.escape(name)} \.\.\. (\w+)", text, re.M)
                status = {"ok": "passed", "FAILED": "failed", "ignored": "ignored"}.get(
                    m.group(1) if m else "", "error")
                message = failure_line(name, text) if status != "passed" else ""
                if status == "error" and not message:
                    message = f"exit status {p.returncode}"
            except subprocess.TimeoutExpired as e:
                text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
                status, message = "timeout", f"did not finish within {args.timeout} s"
            dt = time.monotonic() - t0
            logf.write(f"==== {name} ({status}, {dt:.2f} s)\n{text}\n")
            out.write(f"{name}\t{status}\t{message}\n")
            out.flush()
            if args.verbose:
                print(f"  {args.label}: {name} ... {status}", file=sys.stderr)


# --- compare ----------------------------------------------------------------

def load(path):
    rows = {}
    for line in open(path):
        name, status, message = line.rstrip("\n").split("\t", 2)
        rows[name] = (status, message)
    return rows


def counts(rows):
    c = {}
    for status, _ in rows.values():
        c[status] = c.get(status, 0) + 1
    return c


def cmd_compare(args):
    a, b = load(args.direct), load(args.gateway)
    for label, rows in (("directly", a), ("through the gateway", b)):
        c = counts(rows)
        extra = "".join(f", {c[k]} {k}" for k in ("timeout", "error", "ignored") if c.get(k))
        print(f"{label}: {c.get('passed', 0)} passed, {c.get('failed', 0)} failed{extra} "
              f"(of {len(rows)} tests)")
    names = sorted(set(a) | set(b))
    diff = [n for n in names if a.get(n, ("missing", ""))[0] != b.get(n, ("missing", ""))[0]]
    print()
    print(f"{len(diff)} tests differ:")
    for n in diff:
        sa, ma = a.get(n, ("missing", ""))
        sb, mb = b.get(n, ("missing", ""))
        print(f"  {n}: direct {sa}, gateway {sb}")
        if ma:
            print(f"      direct:  {ma}")
        if mb:
            print(f"      gateway: {mb}")
    same_failed = [n for n in names if n not in diff and a[n][0] not in ("passed", "ignored")]
    if same_failed:
        print()
        print(f"{len(same_failed)} tests fail both ways:")
        for n in same_failed:
            print(f"  {n}: {a[n][1]}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("shim")
    s.add_argument("--listen", required=True)
    s.add_argument("--gateway", required=True)
    s.add_argument("--user", required=True)
    s.add_argument("--database", required=True)
    s.add_argument("--token-file", required=True)
    s.add_argument("--log")
    s.set_defaults(func=cmd_shim)
    r = sub.add_parser("run")
    r.add_argument("--binary", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--log", required=True)
    r.add_argument("--label", default="")
    r.add_argument("--timeout", type=int, default=60)
    r.add_argument("--verbose", action="store_true")
    r.add_argument("filter", nargs="*")
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("compare")
    c.add_argument("direct")
    c.add_argument("gateway")
    c.set_defaults(func=cmd_compare)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
