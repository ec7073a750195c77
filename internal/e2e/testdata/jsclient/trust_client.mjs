// An independent Matrix E2EE client for rcsgate's end-to-end tests:
// matrix-js-sdk with its Rust crypto (what Element Web is built on), playing
// a user who just installed a client — a fresh device, nothing verified.
//
// It reads its job as one JSON object on stdin:
//
//   homeserver, user_id, password  the user (password login, new device)
//   bot                            the bridge bot
//   number                         the contact to open a chat with (start-chat)
//   isolation                      "all" (the default of clients) or
//                                  "only_signed" (Element's "only send to and
//                                  decrypt from cross-signed devices")
//   early                          send the command right after creating the
//                                  DM, before the bot has joined (as Element
//                                  does when a DM starts with a message)
//   text                           what the user writes in the portal
//   replies                        what the test makes the contact answer,
//                                  one per go-ahead line on stdin
//   timeout                        seconds for each wait
//
// and writes JSON lines on stdout (never a key; bodies only those it was given):
//
//   {"stage": "dm", "room": ROOM}
//   {"stage": "bot_reply", "verdict": V}        the bot's answer to start-chat
//   {"stage": "portal", "room": ROOM}           joined; the user's text is sent
//   {"stage": "ghost_message", "index": I, "verdict": V}
//                                               the contact's answer I, after
//                                               the test injected it
//   {"stage": "timeout", "waiting_for": WHAT}   a wait ran out (then exit 2)
//   {"error": "..."}                            then exit 1
//
// A verdict V is the client's own: {"shield": "none|grey|red", "reason":
// CODE|null} from CryptoApi.getEncryptionInfoForEvent, or {"decrypt_error":
// CODE} when the client could not (or would not) decrypt the event.
//
// matrix-js-sdk is loaded from $RCSGATE_JS_MODULES (the node_modules that
// `make tools` installs from this directory's lockfile).

import path from "node:path";
import readline from "node:readline";

const modules = process.env.RCSGATE_JS_MODULES;
if (!modules) {
	fail("RCSGATE_JS_MODULES is not set");
}
const sdk = await import(path.join(modules, "matrix-js-sdk", "lib", "index.js"));
const cryptoApi = await import(path.join(modules, "matrix-js-sdk", "lib", "crypto-api", "index.js"));
const { logger } = await import(path.join(modules, "matrix-js-sdk", "lib", "logger.js"));
logger.setLevel("warn"); // the SDK logs to stderr; keep it short

function emit(obj) {
	process.stdout.write(JSON.stringify(obj) + "\n");
}

function fail(msg) {
	emit({ error: String(msg) });
	process.exit(1);
}

const job = JSON.parse(await readAll(process.stdin));
const timeoutMs = (job.timeout || 60) * 1000;
const lines = readline.createInterface({ input: process.stdin });

async function readAll(stream) {
	// The job is the first line; later lines are the test's go-aheads.
	return await new Promise((resolve, reject) => {
		let buf = "";
		const onData = (chunk) => {
			buf += chunk;
			const nl = buf.indexOf("\n");
			if (nl >= 0) {
				stream.off("data", onData);
				stream.pause();
				resolve(buf.slice(0, nl));
			}
		};
		stream.setEncoding("utf8");
		stream.on("data", onData);
		stream.on("error", reject);
	});
}

// nextLine waits for the test's next line on stdin (its go-ahead).
function nextLine() {
	return new Promise((resolve) => lines.once("line", resolve));
}

const shieldNames = { [cryptoApi.EventShieldColour.NONE]: "none", [cryptoApi.EventShieldColour.GREY]: "grey", [cryptoApi.EventShieldColour.RED]: "red" };

async function verdict(client, ev) {
	if (ev.isDecryptionFailure()) {
		return { decrypt_error: String(ev.decryptionFailureReason) };
	}
	const info = await client.getCrypto().getEncryptionInfoForEvent(ev);
	if (!info) {
		return { shield: "unencrypted", reason: null };
	}
	const reason = info.shieldReason === null ? null : (cryptoApi.EventShieldReason[info.shieldReason] ?? String(info.shieldReason));
	return { shield: shieldNames[info.shieldColour] ?? String(info.shieldColour), reason };
}

// waitFor re-evaluates check on every client event until it returns a value
// other than undefined, or the deadline passes (then it reports and exits).
function waitFor(client, what, check) {
	return new Promise((resolve) => {
		const events = [sdk.RoomEvent.Timeline, sdk.MatrixEventEvent.Decrypted, sdk.RoomMemberEvent.Membership, sdk.ClientEvent.Sync, sdk.ClientEvent.Room];
		let done = false;
		const finish = (v) => {
			if (done) return;
			done = true;
			clearTimeout(timer);
			clearInterval(tick);
			for (const e of events) client.off(e, onEvent);
			resolve(v);
		};
		const onEvent = () => {
			Promise.resolve(check()).then((v) => {
				if (v !== undefined) finish(v);
			}, (err) => fail(`${what}: ${err}`));
		};
		// Also re-check on a tick: a decryption failure becomes final with
		// time, not with an event.
		const tick = setInterval(onEvent, 500);
		const timer = setTimeout(async () => {
			emit({ stage: "timeout", waiting_for: what, bot_said: botSaid(client) });
			await stop(client);
			process.exit(2);
		}, timeoutMs);
		for (const e of events) client.on(e, onEvent);
		onEvent();
	});
}

// botSaid lists what the bot said anywhere (its notices explain failures).
function botSaid(client) {
	const out = [];
	for (const r of client.getRooms()) {
		for (const e of r.getLiveTimeline().getEvents()) {
			if (e.getSender() !== job.bot) continue;
			if (e.isDecryptionFailure()) out.push(`(undecryptable: ${e.decryptionFailureReason})`);
			else if (e.getType() === "m.room.message") out.push(String(e.getContent().body).slice(0, 300));
		}
	}
	return out.slice(-5);
}

async function stop(client) {
	client.stopClient();
	try {
		await client.logout(true);
	} catch {
		// the homeserver may already be gone
	}
}

// messageFrom finds a decrypted-or-failed m.room.message (or undecryptable
// m.room.encrypted) in room from sender, optionally with a given body.
function messageFrom(room, sender, body) {
	if (!room) return undefined;
	for (const ev of room.getLiveTimeline().getEvents()) {
		if (ev.getSender() !== sender) continue;
		if (ev.isDecryptionFailure()) {
			if (body === undefined) return ev;
			continue;
		}
		if (ev.isBeingDecrypted() || ev.getType() !== "m.room.message") continue;
		if (body === undefined || ev.getContent().body === body) return ev;
	}
	return undefined;
}

async function main() {
	const base = sdk.createClient({ baseUrl: job.homeserver });
	const login = await base.loginRequest({
		type: "m.login.password",
		identifier: { type: "m.id.user", user: job.user_id },
		password: job.password,
		initial_device_display_name: "rcsgate trust test (matrix-js-sdk)",
	});
	const client = sdk.createClient({
		baseUrl: job.homeserver, userId: login.user_id, accessToken: login.access_token, deviceId: login.device_id,
	});
	await client.initRustCrypto({ useIndexedDB: false });
	if (job.isolation === "only_signed") {
		client.getCrypto().setDeviceIsolationMode(new cryptoApi.OnlySignedDevicesIsolationMode());
	} else {
		client.getCrypto().setDeviceIsolationMode(new cryptoApi.AllDevicesIsolationMode(false));
	}
	// Join what we are invited to, as a person accepting an invite would.
	client.on(sdk.RoomMemberEvent.Membership, (_ev, member) => {
		if (member.userId === client.getUserId() && member.membership === "invite") {
			client.joinRoom(member.roomId).catch(() => {});
		}
	});
	await client.startClient({ initialSyncLimit: 20 });
	await waitFor(client, "first sync", () => (client.isInitialSyncComplete() ? true : undefined));
	// Cross-signing for the user's own account, as Element sets it up at
	// first login (and as "only cross-signed devices" requires).
	await client.getCrypto().bootstrapCrossSigning({
		authUploadDeviceSigningKeys: async (makeRequest) => {
			await makeRequest({
				type: "m.login.password", password: job.password,
				identifier: { type: "m.id.user", user: job.user_id },
			});
		},
	});

	// Element looks up the bot's devices before it makes an encrypted DM
	// (to know whether it can encrypt for it); so does this client.
	await client.getCrypto().getUserDeviceInfo([job.bot], true);
	// A direct chat as Element makes one: encrypted from the start.
	const dm = await client.createRoom({
		preset: "trusted_private_chat", is_direct: true, invite: [job.bot],
		initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
	});
	const dmRoom = dm.room_id;
	emit({ stage: "dm", room: dmRoom });
	// As Element, write only once the room is ready: the client knows it is
	// encrypted (before, js-sdk would send in the clear) and sees the bot's
	// invite (before, it would share the key with nobody but itself).
	await waitFor(client, "the DM's encryption and the bot's invite in the client's state", async () => {
		const m = client.getRoom(dmRoom)?.getMember(job.bot);
		return m && (m.membership === "invite" || m.membership === "join") &&
			(await client.getCrypto().isEncryptionEnabledInRoom(dmRoom)) ? true : undefined;
	});
	if (!job.early) {
		await waitFor(client, "the bot joining the DM", () => {
			const m = client.getRoom(dmRoom)?.getMember(job.bot);
			return m?.membership === "join" ? true : undefined;
		});
	}
	const knownRooms = new Set(client.getRooms().map((r) => r.roomId));
	const cmdSent = Date.now();
	await client.sendTextMessage(dmRoom, "start-chat " + job.number);

	// The portal: a new room with the contact's ghost that we joined.
	const portalRoom = await waitFor(client, "the portal invite", () => {
		for (const r of client.getRooms()) {
			if (!knownRooms.has(r.roomId) && r.getMyMembership() === "join") return r.roomId;
		}
		return undefined;
	});
	// The bot's answer in the DM (its latest message after the command).
	const botReply = await waitFor(client, "the bot's answer in the DM", () => {
		const room = client.getRoom(dmRoom);
		if (!room) return undefined;
		const evs = room.getLiveTimeline().getEvents().filter((e) => e.getSender() === job.bot && e.getTs() >= cmdSent - 5000 &&
			!e.isBeingDecrypted() && e.getType() === "m.room.message");
		return evs.length ? evs[evs.length - 1] : failedFrom(room, job.bot);
	});
	emit({ stage: "bot_reply", verdict: await verdict(client, botReply) });

	const room = client.getRoom(portalRoom);
	const ghost = await waitFor(client, "the contact's ghost in the portal", () => {
		const r = client.getRoom(portalRoom);
		const g = r?.getJoinedMembers().find((m) => m.userId !== client.getUserId() && m.userId !== job.bot);
		return g ? g.userId : undefined;
	});
	await client.sendTextMessage(portalRoom, job.text);
	emit({ stage: "portal", room: portalRoom, ghost, encrypted: client.isRoomEncrypted ? client.isRoomEncrypted(portalRoom) : undefined });
	// One answer per go-ahead line from the test (which may restart the
	// bridge in between).
	for (const [i, reply] of job.replies.entries()) {
		await nextLine();
		const ev = await waitFor(client, `the contact's answer ${i + 1}`, () =>
			messageFrom(client.getRoom(portalRoom) ?? room, ghost, reply) ?? failedFrom(client.getRoom(portalRoom) ?? room, ghost));
		emit({ stage: "ghost_message", index: i, verdict: await verdict(client, ev) });
	}
	await stop(client);
}

// failedFrom: an event from sender the client has failed to decrypt for 20
// seconds (no key, or a sender it refuses), so the verdict can say so; keys
// that arrive a little after their event are not a failure.
const failingSince = new Map();
const reported = new Set();
function failedFrom(room, sender) {
	if (!room) return undefined;
	for (const ev of room.getLiveTimeline().getEvents()) {
		if (ev.getSender() !== sender || !ev.isDecryptionFailure() || reported.has(ev.getId())) continue;
		const since = failingSince.get(ev.getId()) ?? Date.now();
		failingSince.set(ev.getId(), since);
		if (Date.now() - since >= 20000) {
			reported.add(ev.getId());
			return ev;
		}
	}
	return undefined;
}

main().then(() => process.exit(0), (err) => fail(err && err.stack ? err.stack.split("\n")[0] : err));
