"""``serve``: the local web app (``web/``) over an image tokenizer, a video tokenizer, a generator and a video
generator."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import signal
import socket
import sys
import time

from open_magvit2.cli.common import add_device_arg

MODEL_HELP = ("a checkpoint (save_pretrained folder, official .ckpt, released name or hub repo id), 'demo' for the "
              "bundled demo model, or 'none' to leave the tab out (default: the demo model when bundled)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a local web app: reconstruct photos and clips, sample the generators (needs the web extra)",
        description="Serve a Gradio app with a tab per model: the image tokenizer (original | reconstruction, "
        "PSNR, SSIM, token map), the generator (class, CFG, temperature, top-k/top-p, seed), the video "
        "tokenizer and the video generator (class, optional first frame, CFG, temperature, seed → a clip). "
        "Without --video-generator and with no bundled demo video generator, its tab says so. It listens on "
        "127.0.0.1 (this machine only) unless --host says otherwise. "
        "Install with: pip install open-magvit2[web]",
    )
    p.add_argument("--tokenizer", default=None, metavar="CKPT", help=f"image tokenizer: {MODEL_HELP}")
    p.add_argument("--video-tokenizer", default=None, metavar="CKPT", help=f"video tokenizer: {MODEL_HELP}")
    p.add_argument("--generator", default=None, metavar="CKPT", help=f"AR generator: {MODEL_HELP}")
    p.add_argument("--video-generator", default=None, metavar="CKPT", help=f"AR video generator: {MODEL_HELP}")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to every "
                   "machine that can reach this one, with no login)")
    p.add_argument("--port", type=port_number, default=7860, help="port, 1–65535 (default 7860)")
    add_device_arg(p)
    p.set_defaults(func=run_serve)


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return value


def check_listen(host: str, port: int) -> None:
    """Fail now, before the models load, when the server could not listen on ``host:port``, saying why: a host name
    that does not resolve, an address of another machine, a port in use or one that needs administrator rights."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise OSError(f"--host {host}: no such host ({e.strerror}); pass an address of this machine: 127.0.0.1 (this "
                      "machine only) or 0.0.0.0 (every network)") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: a closing socket is no obstacle
        try:
            s.bind(address)
        except OSError as e:
            why = {errno.EADDRINUSE: "another program is using the port; pass another --port",
                   errno.EADDRNOTAVAIL: f"{host} is not an address of this machine; pass 127.0.0.1 or 0.0.0.0",
                   errno.EACCES: "ports below 1024 need administrator rights; pass another --port (e.g. 7860)"}
            raise OSError(f"cannot listen on {host}:{port}: {why.get(e.errno or 0, e.strerror)}") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (127.x.x.x, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return host == "localhost"


def _stop_on_sigterm() -> None:
    """SIGTERM (``kill``, a service manager) stops the server like Ctrl-C, so its temporary files are removed."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def run_serve(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls (and none to wait for offline)
    from open_magvit2.web.models import load_models, plan_models

    plan_models(args.tokenizer, args.video_tokenizer, args.generator,  # the cheap checks first: something to serve,
                args.video_generator)
    check_listen(args.host, args.port)  # an address to serve it on
    try:
        from open_magvit2.web.app import serve
    except ImportError as e:
        raise ImportError(f"serve needs the web extra: pip install open-magvit2[web] ({e})") from None
    models = load_models(args.tokenizer, args.video_tokenizer, args.generator, args.device,
                         video_generator=args.video_generator)
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the app (no login)",
              file=sys.stderr)
    _stop_on_sigterm()
    print(f"open-magvit2 serve: models loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    try:
        serve(models, args.host, args.port)
    except KeyboardInterrupt:
        print("open-magvit2 serve: stopped", file=sys.stderr)
    return 0
