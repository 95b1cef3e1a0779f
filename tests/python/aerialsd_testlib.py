"""Helpers for tests that start real aerialsd processes on 127.0.0.1.

Standard library only (Debian's /usr/bin/python3, no PyPI): a small
MessagePack codec for the row-data bodies, free ports chosen at run time,
and a Node class that starts, waits for and stops one daemon.
"""
import ctypes
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time

AERIALSD = os.environ.get("AERIALSD") or os.path.join(
    os.environ.get("AERIALS_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", "..")), "build", "aerialsd")
TOKEN = "test-token-0123456789abcdef"


def _die_with_parent():
    """In the child before exec: the kernel kills the node when the test
    process dies, so a test that crashes (or is killed by ctest's timeout)
    never leaves nodes running."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# --- MessagePack (the subset the protocol uses) --------------------------------

def packb(obj):
    if obj is None:
        return b"\xc0"
    if obj is True:
        return b"\xc3"
    if obj is False:
        return b"\xc2"
    if isinstance(obj, int):
        if 0 <= obj < 128:
            return bytes([obj])
        if -32 <= obj < 0:
            return struct.pack("b", obj)
        if obj >= 0:
            return b"\xcf" + struct.pack(">Q", obj)
        return b"\xd3" + struct.pack(">q", obj)
    if isinstance(obj, float):
        return b"\xcb" + struct.pack(">d", obj)
    if isinstance(obj, str):
        data = obj.encode("utf-8")
        return b"\xdb" + struct.pack(">I", len(data)) + data
    if isinstance(obj, (bytes, bytearray)):
        return b"\xc6" + struct.pack(">I", len(obj)) + bytes(obj)
    if isinstance(obj, (list, tuple)):
        return b"\xdd" + struct.pack(">I", len(obj)) + b"".join(packb(x) for x in obj)
    if isinstance(obj, dict):
        return b"\xdf" + struct.pack(">I", len(obj)) + b"".join(packb(k) + packb(v) for k, v in obj.items())
    raise TypeError("cannot pack %r" % (obj,))


def unpackb(data):
    value, end = _unpack(data, 0)
    if end != len(data):
        raise ValueError("%d bytes after the MessagePack object" % (len(data) - end))
    return value


def _unpack(b, i):
    t = b[i]
    i += 1
    if t <= 0x7f:
        return t, i
    if t >= 0xe0:
        return t - 256, i
    if 0x80 <= t <= 0x8f:
        return _map(b, i, t & 0x0f)
    if 0x90 <= t <= 0x9f:
        return _array(b, i, t & 0x0f)
    if 0xa0 <= t <= 0xbf:
        n = t & 0x1f
        return b[i:i + n].decode("utf-8", "surrogateescape"), i + n
    if t == 0xc0:
        return None, i
    if t in (0xc2, 0xc3):
        return t == 0xc3, i
    widths = {0xc4: 1, 0xc5: 2, 0xc6: 4}
    if t in widths:
        n = int.from_bytes(b[i:i + widths[t]], "big")
        i += widths[t]
        return bytes(b[i:i + n]), i + n
    if t == 0xca:
        return struct.unpack(">f", b[i:i + 4])[0], i + 4
    if t == 0xcb:
        return struct.unpack(">d", b[i:i + 8])[0], i + 8
    ints = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q", 0xd0: ">b", 0xd1: ">h", 0xd2: ">i", 0xd3: ">q"}
    if t in ints:
        size = struct.calcsize(ints[t])
        return struct.unpack(ints[t], b[i:i + size])[0], i + size
    strs = {0xd9: 1, 0xda: 2, 0xdb: 4}
    if t in strs:
        n = int.from_bytes(b[i:i + strs[t]], "big")
        i += strs[t]
        return b[i:i + n].decode("utf-8", "surrogateescape"), i + n
    if t in (0xdc, 0xdd):
        w = 2 if t == 0xdc else 4
        return _array(b, i + w, int.from_bytes(b[i:i + w], "big"))
    if t in (0xde, 0xdf):
        w = 2 if t == 0xde else 4
        return _map(b, i + w, int.from_bytes(b[i:i + w], "big"))
    raise ValueError("unsupported MessagePack type 0x%02x" % t)


def _array(b, i, n):
    out = []
    for _ in range(n):
        v, i = _unpack(b, i)
        out.append(v)
    return out, i


def _map(b, i, n):
    out = {}
    for _ in range(n):
        k, i = _unpack(b, i)
        v, i = _unpack(b, i)
        out[k] = v
    return out, i


def read_frames(body):
    """The frames of a streamed answer (application/x-aerials-frames): each a
    4-byte big-endian length and that many bytes of one MessagePack map."""
    frames = []
    i = 0
    while i < len(body):
        if len(body) - i < 4:
            raise ValueError("truncated frame length at byte %d" % i)
        n = int.from_bytes(body[i:i + 4], "big")
        i += 4
        if len(body) - i < n:
            raise ValueError("frame at byte %d announces %d bytes, %d left" % (i - 4, n, len(body) - i))
        frames.append(unpackb(body[i:i + n]))
        i += n
    return frames


def streamed_scan(frames):
    """(columns, rows, last frame) of a streamed scan's frames, checking their order."""
    if not frames or set(frames[0]) != {"columns"}:
        raise AssertionError("the first frame must be {columns}: %r" % (frames[:1],))
    rows = []
    for f in frames[1:-1]:
        if set(f) != {"rows"}:
            raise AssertionError("a middle frame must be {rows}: %r" % (f,))
        rows += f["rows"]
    last = frames[-1] if len(frames) > 1 else None
    if last is None or not ("end" in last or "error" in last):
        raise AssertionError("the last frame must be {end, rows} or {error, message}: %r" % (last,))
    return frames[0]["columns"], rows, last


def float32_is_float():
    """The codec's float decoding keeps Python floats floats (5.0 stays 5.0)."""
    return isinstance(unpackb(b"\xca" + struct.pack(">f", 5.0)), float)


# --- processes -----------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def msgpack(self):
        return unpackb(self.body)

    def header(self, name):
        return self.headers.get(name)

    def __repr__(self):
        return "Reply(%d, %r)" % (self.status, self.body[:300])


class Node:
    """One aerialsd process on 127.0.0.1 at a port chosen at run time."""

    def __init__(self, workdir, name, join=None, extra=()):
        self.workdir = workdir
        self.name = name
        self.root = os.path.join(workdir, name)
        self.port = free_port()
        self.address = "127.0.0.1:%d" % self.port
        self.token_file = os.path.join(workdir, "token")
        if not os.path.exists(self.token_file):
            with open(self.token_file, "w") as f:
                f.write(TOKEN + "\n")
        self.log_path = os.path.join(workdir, name + ".log")
        self.join = join
        self.extra = list(extra)
        self.process = None
        self.epoch = None

    def start(self):
        args = [AERIALSD, "--root", self.root, "--listen", self.address, "--token-file", self.token_file] + self.extra
        if "--threads" not in self.extra:
            args += ["--threads", "4"]
        # The suites written before replication test one copy per record
        # (sharded tables and map-reduce need it); replication tests say so.
        if "--replication" not in self.extra:
            args += ["--replication", "1"]
        if self.join:
            args += ["--join", self.join]
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        return self

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError("%s exited with %s:\n%s" % (self.name, self.process.returncode, self.log_text()))
            try:
                r = self.request("GET", "/health/ready", token=None)
                if r.status == 200:
                    return r.json()
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("%s not ready after %ss:\n%s" % (self.name, timeout, self.log_text()))

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_lines(self):
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def request(self, method, path, body=None, content_type=None, token=TOKEN, headers=None, epoch=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            h = dict(headers or {})
            if token is not None:
                h["Authorization"] = "Bearer " + token
            if epoch is not None:
                h["X-Aerials-Epoch"] = str(epoch)
            if content_type:
                h["Content-Type"] = content_type
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return Reply(r.status, {k: v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def cluster_map(self):
        r = self.request("GET", "/v1/cluster/map")
        assert r.status == 200, r
        return r.json()

    def call(self, path, document, epoch=None, **kw):
        """POSTs a MessagePack document with the node's current epoch."""
        if epoch is None:
            epoch = self.cluster_map()["epoch"]
        return self.request("POST", path, packb(document), "application/msgpack", epoch=epoch, **kw)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            self.log.close()
        return self.process.returncode if self.process else None


def served_by(reply):
    return reply.header("X-Aerials-Forwarded-To") or reply.header("X-Aerials-Node")


class Cluster:
    """A seed and `size - 1` nodes joined through it, all killed by close()."""

    def __init__(self, size=3, extra=()):
        self.tmp = tempfile.TemporaryDirectory(prefix="aerialsd-")
        self.nodes = []
        try:
            seed = Node(self.tmp.name, "n0", extra=extra).start()
            self.nodes.append(seed)
            seed.wait_ready()
            for i in range(1, size):
                node = Node(self.tmp.name, "n%d" % i, join=seed.address, extra=extra).start()
                self.nodes.append(node)
                node.wait_ready()
        except BaseException:
            self.close()
            raise

    def by_id(self):
        out = {}
        for n in self.nodes:
            out[n.request("GET", "/health/live", token=None).header("X-Aerials-Node")] = n
        return out

    def close(self):
        for n in self.nodes:
            try:
                n.stop(signal.SIGKILL)
            except Exception:
                pass
        self.tmp.cleanup()
