#!/usr/bin/env python3
"""An independent E2EE Matrix client for rcsgate's end-to-end test.

matrix-nio with python-olm (Debian: python3-matrix-nio, python3-olm) plays a
user who just installed a client: a fresh device, no verification, trusting
the devices it meets. It reads its job as one JSON object on stdin:

  homeserver, user_id, password, room_id  the encrypted portal (already joined)
  ghost                                   the contact's Matrix user
  store                                   directory for nio's crypto store
  messages                                texts to send; the echo contact
                                          answers each with the same text
  inbound_text                            a text the contact will send
  image_sha256                            SHA-256 of an image the contact will send
  file_b64                                a file to send encrypted to the contact
                                          (the bridge decrypts it for the phone)
  bot                                     the bridge bot; if set, the client
                                          also runs discard-megolm-session
  timeout                                 seconds for the whole run

and writes JSON lines on stdout:

  {"stage": "echoed", "sent": N, "echoes": N}   all echoes read and decrypted:
                                                 now the test injects the
                                                 contact's text and image
  {"stage": "done", "text": true, "image_sha256": "...", "image_encrypted": true}
  {"stage": "file_sent"}                         the encrypted file is in the room
  {"stage": "reset"}                             the bot confirmed the command
  {"error": "..."}                               then exit 1

It never prints a message body or a key.
"""

import asyncio
import base64
import hashlib
import json
import sys

from nio import (
    AsyncClient,
    AsyncClientConfig,
    LoginResponse,
    MegolmEvent,
    RoomEncryptedImage,
    RoomMessageNotice,
    RoomMessageText,
    RoomSendResponse,
    SyncError,
    UploadResponse,
)
from nio.crypto import decrypt_attachment


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Run:
    def __init__(self, job):
        self.job = job
        self.room = job["room_id"]
        self.ghost = job["ghost"]
        self.pending = set(job["messages"])
        self.echoes = 0
        self.text_seen = False
        self.image = None  # (url, file dict) of the contact's encrypted image
        self.undecryptable = 0
        self.plain_in_room = 0
        self.bot_reset = False
        cfg = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
        self.client = AsyncClient(job["homeserver"], job["user_id"], store_path=job["store"], config=cfg)
        self.client.add_event_callback(self.on_text, RoomMessageText)
        self.client.add_event_callback(self.on_notice, RoomMessageNotice)
        self.client.add_event_callback(self.on_image, RoomEncryptedImage)
        self.client.add_event_callback(self.on_undecryptable, MegolmEvent)

    async def on_notice(self, room, evt):
        if room.room_id == self.room and evt.sender == self.job.get("bot") and evt.decrypted:
            self.bot_reset = self.bot_reset or "Successfully reset Megolm session" in evt.body

    async def on_text(self, room, evt):
        if room.room_id != self.room or evt.sender != self.ghost:
            return
        if not evt.decrypted:
            self.plain_in_room += 1
            return
        if evt.body in self.pending:
            self.pending.discard(evt.body)
            self.echoes += 1
        elif evt.body == self.job["inbound_text"]:
            self.text_seen = True

    async def on_image(self, room, evt):
        if room.room_id == self.room and evt.sender == self.ghost and evt.decrypted:
            self.image = evt

    async def on_undecryptable(self, room, evt):
        if room.room_id == self.room:
            self.undecryptable += 1
            # A fresh client asks for the key it misses, as Element does.
            try:
                await self.client.request_room_key(evt)
            except Exception:
                pass

    async def sync_once(self, timeout_ms):
        resp = await self.client.sync(timeout=timeout_ms, full_state=self.client.next_batch is None)
        if isinstance(resp, SyncError):
            raise RuntimeError("sync failed: %s" % resp.message)
        c = self.client
        if c.should_upload_keys:
            await c.keys_upload()
        if c.should_query_keys:
            await c.keys_query()
        if c.should_claim_keys:
            await c.keys_claim(c.get_users_for_key_claiming())
        await c.send_to_device_messages()

    async def until(self, cond, what):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.job["timeout"]
        while not cond():
            if loop.time() > deadline:
                raise RuntimeError(
                    "timed out waiting for %s (undecryptable events: %d, unencrypted from contact: %d)"
                    % (what, self.undecryptable, self.plain_in_room))
            await self.sync_once(1000)

    async def download(self, mxc):
        # Authenticated media (Synapse) first, then the legacy endpoint (Dendrite).
        server, media = mxc[len("mxc://"):].split("/", 1)
        hs = self.job["homeserver"]
        headers = {"Authorization": "Bearer " + self.client.access_token}
        session = self.client.client_session
        for path in ("/_matrix/client/v1/media/download/", "/_matrix/media/v3/download/"):
            async with session.get(hs + path + server + "/" + media, headers=headers) as r:
                if r.status == 200:
                    return await r.read()
        raise RuntimeError("could not download the contact's image")

    async def main(self):
        c = self.client
        resp = await c.login(self.job["password"], device_name="rcsgate e2ee test (matrix-nio)")
        if not isinstance(resp, LoginResponse):
            raise RuntimeError("login failed: %s" % getattr(resp, "message", resp))
        await self.sync_once(0)
        if self.room in c.invited_rooms:
            await c.join(self.room)
        await self.until(lambda: self.room in c.rooms, "the portal in sync")
        room = c.rooms[self.room]
        if not room.encrypted:
            raise RuntimeError("the portal is not encrypted")
        await c.joined_members(self.room)
        for body in self.job["messages"]:
            # A new user does not verify anyone: send to every device.
            r = await c.room_send(self.room, "m.room.message", {"msgtype": "m.text", "body": body},
                                  ignore_unverified_devices=True)
            if not isinstance(r, RoomSendResponse):
                raise RuntimeError("send failed: %s" % getattr(r, "message", r))
        await self.until(lambda: not self.pending, "the echoes")
        emit({"stage": "echoed", "sent": len(self.job["messages"]), "echoes": self.echoes})
        await self.until(lambda: self.text_seen and self.image is not None, "the contact's text and image")
        img = self.image
        data = decrypt_attachment(await self.download(img.url), img.key["k"], img.hashes["sha256"], img.iv)
        emit({"stage": "done", "text": self.text_seen, "image_sha256": hashlib.sha256(data).hexdigest(),
              "image_encrypted": True})
        if self.job.get("file_b64"):
            data = base64.b64decode(self.job["file_b64"])
            up, keys = await c.upload(lambda *_: data, content_type="application/pdf", filename="doc.pdf",
                                      encrypt=True, filesize=len(data))
            if not isinstance(up, UploadResponse):
                raise RuntimeError("upload failed: %s" % getattr(up, "message", up))
            content = {"msgtype": "m.file", "body": "doc.pdf",
                       "info": {"size": len(data), "mimetype": "application/pdf"},
                       "file": {"url": up.content_uri, "key": keys["key"], "iv": keys["iv"],
                                "hashes": keys["hashes"], "v": keys["v"]}}
            r = await c.room_send(self.room, "m.room.message", content, ignore_unverified_devices=True)
            if not isinstance(r, RoomSendResponse):
                raise RuntimeError("send failed: %s" % getattr(r, "message", r))
            emit({"stage": "file_sent"})
        if self.job.get("bot"):
            # The admin command answers in the encrypted portal, which proves
            # it runs (and the bot can still encrypt) behind our wrapper.
            r = await c.room_send(self.room, "m.room.message",
                                  {"msgtype": "m.text", "body": "!rcs discard-megolm-session"},
                                  ignore_unverified_devices=True)
            if not isinstance(r, RoomSendResponse):
                raise RuntimeError("send failed: %s" % getattr(r, "message", r))
            await self.until(lambda: self.bot_reset, "the bot's answer to discard-megolm-session")
            emit({"stage": "reset"})


async def amain():
    job = json.load(sys.stdin)
    run = Run(job)
    try:
        await asyncio.wait_for(run.main(), timeout=job["timeout"] * 3)
    finally:
        await run.client.close()


if __name__ == "__main__":
    try:
        asyncio.run(amain())
    except Exception as e:  # report, never a traceback with local values
        emit({"error": "%s: %s" % (type(e).__name__, e)})
        sys.exit(1)
