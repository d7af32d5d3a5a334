#!/usr/bin/env python3
"""Writes the seed inputs fuzz/corpus/*/seed-* (the fuzzers grow the rest).

netlink seeds are the recorded dumps in tests/fixtures, framed the way
fuzz/harness.rs reads them: byte 0 picks the scenario (an index into
SCENARIOS there), then frames of a little-endian u16 length and that many
bytes, or a fault code (0xfff0 and up). Headers get seq 0 and pid 0, which
the harness fills in with the values of the dump in flight.

When a scenario is added to harness.rs, add its seeds here and run:
python3 fuzz/seeds.py
"""

import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
# Scenario indexes in fuzz/harness.rs SCENARIOS; PORT_CHECK is bit 4.
(TCP_LEGACY, TCP_BY_FAMILY, TCP_AUTO, LISTENERS, UDP, UNIX, ALL, CGROUP, SIDE, TCP_INFO,
 TCP_INFO_CGROUP) = range(11)
PORT_CHECK = 0x10
ENOBUFS, EINTR, TIMEOUT, EOF, OVERSIZED, ECONNRESET = range(0xfff0, 0xfff6)
NLMSG_DONE = 3
NLM_F_DUMP_INTR = 0x10

ARGV = [
    ["--web.listen-address=127.0.0.1:0", "--web.telemetry-path", "/m", "--cache.ttl=250ms",
     "--log.level", "debug", "--collector.tcp.dump=by-family"],
    ["dump", "--format=table", "--collector.tcp.dump", "legacy", "--source.fixture", "x.fixture",
     "--record", "y"],
    ["--help"], ["dump", "--help"], ["--version"],
    ["--web.listen-address", "[::1]:19275", "--web.read-timeout", "1m30s", "--web.write-timeout=3s"],
    ["--web.max-connections", "64", "--web.max-header-bytes=16384", "--collector.timeout", "10s"],
    ["--cache.ttl", "5x"], ["--bogus"], ["--", "--cache.ttl=1s"], ["--unknown=1"],
    ["--web-listen-address", ":0", "--cache-ttl", "1h1ms"],
    ["dump", "--format", "xml"], ["--web.listen-address", "nope"],
    ["--collector.timeout=2d", "--log.level=warn", "--web.telemetry-path=/"],
    ["--collector.tcp.ports=22,443,8000-8100", "--collector.udp.ports", "53",
     "--no-collector.unix", "--collector.listeners.max=5", "--compat.node-exporter"],
    ["--collector.ports.max-series", "0", "--collector.unix.max-listeners=2",
     "--web.config.file", "w.yml", "dump", "--no-collector.tcp"],
]


def load(name):
    """{dump name: [datagrams]} of a fixture, in order."""
    dumps = []
    for line in open(os.path.join(ROOT, "tests", "fixtures", name)):
        words = line.split("#")[0].split()
        if words[:1] == ["dump"]:
            dumps.append((" ".join(words[1:-1]), []))
        elif words[:1] == ["recv"]:
            dumps[-1][1].append(zero_headers(bytes.fromhex(words[1])))
    return dumps


def zero_headers(datagram):
    out = bytearray(datagram)
    at = 0
    while at + 16 <= len(out):
        length = struct.unpack_from("=I", out, at)[0]
        out[at + 8:at + 16] = bytes(8)
        if length < 16:
            break
        at += (length + 3) & ~3
    return bytes(out)


def patch(datagrams, kind, seq=None, pid=None, flags=0):
    """The datagrams with every message of type `kind` (None: all) given
    this seq and pid, and `flags` ORed into its flags."""
    out = []
    for datagram in datagrams:
        d = bytearray(datagram)
        at = 0
        while at + 16 <= len(d):
            length, typ, fl = struct.unpack_from("=IHH", d, at)
            if kind is None or typ == kind:
                struct.pack_into("=H", d, at + 6, fl | flags)
                if seq is not None:
                    struct.pack_into("=I", d, at + 8, seq)
                if pid is not None:
                    struct.pack_into("=I", d, at + 12, pid)
            if length < 16:
                break
            at += (length + 3) & ~3
        out.append(bytes(d))
    return out


def frames(steps):
    return b"".join(struct.pack("<H", s) if isinstance(s, int)
                    else struct.pack("<H", len(s)) + s for s in steps)


def seed(name, selector, steps):
    with open(os.path.join(CORPUS, "netlink", "seed-" + name), "wb") as f:
        f.write(bytes([selector]) + frames(steps))


def seed_side(name, selector, main_steps, side_steps):
    """A seed for a side-transport scenario: a u16 length, the main
    transport's frames, then the side transport's."""
    main = frames(main_steps)
    with open(os.path.join(CORPUS, "netlink", "seed-" + name), "wb") as f:
        f.write(bytes([selector]) + struct.pack("<H", len(main)) + main + frames(side_steps))


def main():
    os.makedirs(os.path.join(CORPUS, "argv"), exist_ok=True)
    os.makedirs(os.path.join(CORPUS, "netlink"), exist_ok=True)
    for i, args in enumerate(ARGV):
        with open(os.path.join(CORPUS, "argv", "seed-%02d" % i), "wb") as f:
            f.write(b"\0".join(a.encode() for a in args))

    legacy = load("all_legacy.fixture")
    by_family = load("all_by_family.fixture")
    refused = load("legacy_refused.fixture")

    def of(dumps, *names):
        return [d for name, data in dumps if name in names for d in data]

    tcp = of(legacy, "legacy")
    seed("tcp-legacy", TCP_LEGACY, tcp)
    seed("tcp-legacy-port", TCP_LEGACY | PORT_CHECK, tcp)
    seed("tcp-legacy-twice", TCP_LEGACY, tcp + tcp)
    seed("tcp-by-family", TCP_BY_FAMILY, of(by_family, "by-family ipv4", "by-family ipv6"))
    seed("tcp-auto-refused", TCP_AUTO, [d for _, data in refused for d in data])
    seed("listeners", LISTENERS, of(legacy, "listen ipv4", "listen ipv6"))
    seed("udp", UDP, of(legacy, "udp ipv4", "udp ipv6"))
    seed("unix", UNIX, of(legacy, "unix"))
    seed("all", ALL, [d for _, data in legacy for d in data])
    seed("all-by-family", ALL, [d for _, data in by_family for d in data])
    first = tcp[0]
    seed("enobufs-then-good", TCP_LEGACY, [first, ENOBUFS] + tcp)
    seed("eintr", TCP_LEGACY, [EINTR, first, EINTR] + tcp[1:])
    seed("timeout", TCP_LEGACY, [first, TIMEOUT] + tcp)
    seed("eof", TCP_LEGACY, [first, EOF] + tcp)
    seed("oversized", TCP_LEGACY, [OVERSIZED] + tcp)
    seed("econnreset", TCP_AUTO, [ECONNRESET] + tcp)
    seed("truncated", TCP_LEGACY, [first[:100]] + tcp)

    # Sequence numbers: each dump request takes the next one, from 1. An
    # answer that is not for the request in flight must fail its collector.
    # The second collection's DONE carries the first one's seq (stale):
    seed("stale-done", TCP_LEGACY, tcp + patch(tcp, NLMSG_DONE, seq=1) + tcp)
    # A DONE from no request of ours, then a clean collection:
    udp = of(legacy, "udp ipv4", "udp ipv6")
    seed("foreign-done", UDP, patch(udp, NLMSG_DONE, seq=0x41414141) + udp)
    # A DONE for another netlink port:
    seed("foreign-port-done", TCP_LEGACY | PORT_CHECK,
         patch(tcp, NLMSG_DONE, pid=999) + tcp)
    # All collectors on one socket: legacy 1, listen 2 and 3, udp 4 and 5,
    # unix 6. The listen ipv6 dump gets a DONE with the ipv4 dump's seq:
    everything = list(legacy[0][1])
    for name, data in legacy[1:]:
        everything += patch(data, NLMSG_DONE, seq=2) if name == "listen ipv6" else data
    seed("all-stale-side-done", ALL, everything)
    # A dump flagged inconsistent is retried: only the retry counts.
    seed("intr-retry", TCP_LEGACY, patch(tcp, None, flags=NLM_F_DUMP_INTR) + tcp)
    # One collector fails after part of its answer, in the middle of a
    # collection, between two good ones: its series must go, the others stay.
    good = [d for _, data in legacy for d in data]
    udp4 = of(legacy, "udp ipv4")
    broken = []
    for name, data in legacy:
        broken += udp4[:1] + [ECONNRESET] if name == "udp ipv4" else \
            [] if name == "udp ipv6" else data
    seed("all-udp-fails-midway", ALL, good + broken + good)

    # The side collectors on their own transport (and thread), as in the
    # server: each transport numbers its own requests from 1.
    side = [d for name, data in legacy if name != "legacy" for d in data]
    seed_side("side", SIDE, tcp * 3, side * 3)
    side_broken = [step for name, data in legacy if name != "legacy"
                   for step in (udp4[:1] + [ECONNRESET] if name == "udp ipv4" else
                                [] if name == "udp ipv6" else data)]
    seed_side("side-udp-fails-midway", SIDE, tcp * 3, side + side_broken + side)

    # --collector.tcp.info (auto mode, per-port views): the recorded answers
    # with struct tcp_info, twice (the counter's second collection), and a
    # legacy refusal followed by the by-family answers.
    info = of(load("tcp_info_legacy.fixture"), "legacy info")
    info_by_family = of(load("tcp_info_by_family.fixture"),
                        "by-family ipv4 info", "by-family ipv6 info")
    seed("tcp-info", TCP_INFO, info + info)
    # Every socket gone (only the NLMSG_DONE), then back: the counters
    # neither fall nor count the returning sockets twice.
    seed("tcp-info-closes", TCP_INFO, info + info[-1:] + info)
    refusal = [d for _, data in refused for d in data][:1]
    seed("tcp-info-refused", TCP_INFO, refusal + info_by_family)
    # --collector.tcp.info with --collector.cgroup: growth booked per
    # cgroup id adds up to the host counter's, also across a collection
    # that fails after reading every socket (so their growth is booked in
    # the failed attempt and must be kept for the next success).
    seed("tcp-info-cgroup", TCP_INFO_CGROUP, info + info)
    seed("tcp-info-cgroup-fails-midway", TCP_INFO_CGROUP,
         info[-1:] + info[:-1] + [ECONNRESET] + info + info)

    http_seeds()


# http inputs (fuzz/http_harness.rs): byte 0 is the mode, then chunks of a
# control byte (bits 0-5: length - 1; NO_READ; SLOW_READ) and the bytes.
HTTP_TLS, HTTP_SMALL_HEADS, HTTP_EXTRA_HEADER = 0x01, 0x08, 0x10
FRESH, COLLECTING, EMPTY, SLOW_COLLECTION = (m << 1 for m in range(4))
NO_READ, SLOW_READ = 0x40, 0x80


def http_chunks(data, size=64, control=0):
    """data split into chunks of at most `size` (1..64) bytes."""
    out = b""
    for at in range(0, len(data), size):
        part = data[at:at + size]
        out += bytes([control | (len(part) - 1)]) + part
    return out


def http_seed(name, mode, *parts):
    os.makedirs(os.path.join(CORPUS, "http"), exist_ok=True)
    with open(os.path.join(CORPUS, "http", "seed-" + name), "wb") as f:
        f.write(bytes([mode]) + b"".join(parts))


def http_seeds():
    get = b"GET /metrics HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n"
    plain = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
    head = b"HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
    landing = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    close = b"GET / HTTP/1.0\r\n\r\n"
    for mode, label in [(FRESH, "fresh"), (COLLECTING, "collecting"),
                        (EMPTY, "empty"), (SLOW_COLLECTION, "slow-collection")]:
        http_seed("scrape-" + label, mode, http_chunks(get))
        http_seed("pipelined-" + label, mode,
                  http_chunks(get + head + plain + landing, control=NO_READ), http_chunks(close))
        http_seed("tls-" + label, mode | HTTP_TLS, http_chunks(get + head + landing))
    http_seed("byte-by-byte", FRESH, http_chunks(get + head, size=1))
    http_seed("trickle-read", FRESH, http_chunks(plain + head + landing, control=SLOW_READ))
    http_seed("tls-trickle-read", FRESH | HTTP_TLS, http_chunks(plain + landing, control=SLOW_READ))
    http_seed("extra-header", FRESH | HTTP_EXTRA_HEADER, http_chunks(head + landing))
    for name, request in [
        ("404", b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("405", b"POST /metrics HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("413", b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nGET /"),
        ("413-chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("head-with-body", b"HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nGET"),
        ("400-version", b"GET / HTTP/2.0\r\n\r\n"),
        ("400-line", b"GET  / HTTP/1.1\r\n\r\n"),
        ("400-header", b"GET / HTTP/1.1\r\nno colon\r\n\r\n"),
        ("bare-lf", b"GET / HTTP/1.1\nHost: a\n\n"),
        ("nul-in-value", b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n"),
        ("absolute-form", b"GET http://a:1/metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("options-star", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("expect", b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n"),
        ("leading-crlf", b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("te-chunked-get", b"GET /metrics HTTP/1.1\r\nHost: a\r\nTE: chunked\r\n\r\n"),
    ]:
        http_seed(name, FRESH, http_chunks(request + landing))
    # collect[] filters (node_exporter's): as Prometheus' params: sends them
    # (percent-encoded), repeated, unknown, empty, a scope, both params.
    filtered = (b"GET /metrics?collect%5B%5D=udp&collect%5B%5D=unix HTTP/1.1\r\nHost: a\r\n\r\n"
                + b"GET /metrics?collect[]=tcp&collect[]=tcp&x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
                + b"HEAD /metrics?exclude[]=tcp HTTP/1.1\r\nHost: a\r\n\r\n")
    refused = (b"GET /metrics?collect[]=nope&collect[]= HTTP/1.1\r\nHost: a\r\n\r\n"
               + b"GET /metrics?collect[]=netns HTTP/1.1\r\nHost: a\r\n\r\n"
               + b"GET /metrics?collect[]=udp&exclude[]=tcp HTTP/1.1\r\nHost: a\r\n\r\n"
               + b"GET /metrics?collect%5B%5D=%zz HTTP/1.1\r\nHost: a\r\n\r\n")
    for mode, label in [(FRESH, "fresh"), (COLLECTING, "collecting"),
                        (SLOW_COLLECTION, "slow-collection")]:
        http_seed("collect-" + label, mode, http_chunks(filtered + plain, control=NO_READ),
                  http_chunks(close))
    http_seed("collect-refused", COLLECTING, http_chunks(refused + plain, control=NO_READ),
              http_chunks(close))
    http_seed("431", FRESH | HTTP_SMALL_HEADS,
              http_chunks(b"GET / HTTP/1.1\r\nX: " + b"a" * 300 + b"\r\n\r\n"))
    http_seed("431-no-end", FRESH | HTTP_SMALL_HEADS, http_chunks(b"GET / HTTP/1.1\r\nX: " + b"a" * 300))
    http_seed("tls-400", FRESH | HTTP_TLS, http_chunks(b"GET / HTTP/1.1\r\nX\r\n\r\n"))
    # Two different lengths on a kept-alive connection: 400 and close (the
    # hand-written parser kept it alive; the harness flagged it).
    http_seed("two-lengths", FRESH, http_chunks(
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n" + landing))


main()
