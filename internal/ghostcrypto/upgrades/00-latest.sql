-- v0 -> v1: Ghost devices and the recipients of their Megolm sessions
CREATE TABLE rcsgate_ghost_device (
	user_id    TEXT    PRIMARY KEY,
	device_id  TEXT    NOT NULL,
	-- 0: logged in; 1: cross-signing keys published; 2: ready (device keys
	-- uploaded and signed); -1: this ghost cannot have a trusted device
	state      INTEGER NOT NULL,
	created_at BIGINT  NOT NULL
);

CREATE TABLE rcsgate_ghost_session (
	user_id    TEXT NOT NULL,
	room_id    TEXT NOT NULL,
	session_id TEXT NOT NULL,
	-- SHA-256 over the devices the session was shared with; another set of
	-- devices in the room means a new session
	recipients TEXT NOT NULL,
	PRIMARY KEY (user_id, room_id)
);
