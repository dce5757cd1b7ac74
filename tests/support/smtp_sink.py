"""A private SMTP server for the notification tests (aiosmtpd).

Every message it accepts is saved in FOLDER as NNNNNN.json: the envelope
recipients, the Message-ID, the subject and both bodies (text and HTML),
parsed with Python's email package. A share of messages (--refuse, 0..1) is
refused with --code (451 by default: a transient refusal; 550 permanent),
decided by a seeded random generator so runs repeat. It never deduplicates:
a message sent twice is saved twice, so a test can see it.

With --discard it only counts what it accepts (no parsing, no files): the
benchmarks use it so the figure is the service's, not this sink's JSON
writer's. Prints READY on stdout once it accepts connections; stops on
SIGTERM.
"""

import argparse
import email
import email.policy
import json
import os
import random
import signal
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, folder, refuse, code, seed):
        self.folder = folder
        self.refuse = refuse
        self.code = code
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.rng.random() < self.refuse:
                return f"{self.code} refused by the test server"
            self.count += 1
            n = self.count
        if self.folder is None:
            return "250 OK"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        record = {
            "rcptTos": envelope.rcpt_tos,
            "mailFrom": envelope.mail_from,
            "messageId": (message.get("Message-ID") or "").strip(),
            "subject": str(message.get("Subject") or ""),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
        }
        path = os.path.join(self.folder, f"{n:06d}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 OK"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--refuse", type=float, default=0.0)
    parser.add_argument("--code", type=int, default=451)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--discard", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.folder, exist_ok=True)
    controller = Controller(
        Sink(None if args.discard else args.folder, args.refuse, args.code, args.seed),
        hostname="127.0.0.1",
        port=args.port,
    )
    controller.start()
    print("READY", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
