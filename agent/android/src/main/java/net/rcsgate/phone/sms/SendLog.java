package net.rcsgate.phone.sms;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;
import java.util.LinkedHashMap;
import java.util.Map;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * The durable record of every send the agent asked for, by its id (the bridge's idempotency key):
 * started, each part's sent result and delivery report, and the outcome. A send asked for again
 * (after a timeout, the app's or the agent's crash) is answered from here and never sent twice.
 * One append-only file of JSON lines, each fsync'd; rewritten with the newest records when long.
 */
public final class SendLog {
    static final int KEEP = 10000;
    static final long KEEP_MS = 7L * 24 * 3600 * 1000;

    public enum State { STARTED, SENT, FAILED }

    /** What is known about one send. */
    public static final class Rec {
        public final String id;
        public String chat = "";
        public long startedAt;
        public int parts;
        public State state = State.STARTED;
        public String reason = "";
        public boolean[] sentOk;
        public boolean[] sentSeen;
        public int[] sentCode;
        public boolean[] delivSeen;
        public boolean[] delivOk;
        public boolean receiptDone;

        Rec(String id) {
            this.id = id;
        }

        void sizeTo(int n) {
            if (parts == n && sentOk != null) return;
            parts = n;
            sentOk = new boolean[n];
            sentSeen = new boolean[n];
            sentCode = new int[n];
            delivSeen = new boolean[n];
            delivOk = new boolean[n];
        }

        public boolean allSent() {
            if (sentSeen == null) return false;
            for (boolean b : sentSeen) if (!b) return false;
            return true;
        }

        public boolean allDelivered() {
            if (delivSeen == null) return false;
            for (boolean b : delivSeen) if (!b) return false;
            return true;
        }
    }

    private final File file;
    private final LinkedHashMap<String, Rec> recs = new LinkedHashMap<>();
    private FileOutputStream out;
    private int lines;

    public SendLog(File file) throws IOException {
        this.file = file;
        if (file.exists()) {
            for (String line : new String(Files.readAllBytes(file.toPath()), StandardCharsets.UTF_8).split("\n")) {
                if (line.isEmpty()) continue;
                lines++;
                try {
                    apply(new JSONObject(line));
                } catch (JSONException e) {
                    // a torn last line: it was never fsync'd, so nothing was acted on
                }
            }
        }
        out = new FileOutputStream(file, true);
    }

    private void apply(JSONObject o) {
        String id = o.optString("id");
        String op = o.optString("op");
        Rec r = recs.get(id);
        if (r == null) {
            if (!op.equals("start")) return;
            r = new Rec(id);
            recs.put(id, r);
        }
        switch (op) {
            case "start":
                r.chat = o.optString("chat");
                r.startedAt = o.optLong("at");
                r.sizeTo(o.optInt("parts", 1));
                r.state = State.STARTED;
                break;
            case "part": {
                int i = o.optInt("part");
                if (i >= 0 && i < r.parts) {
                    r.sentSeen[i] = true;
                    r.sentOk[i] = o.optBoolean("ok");
                    r.sentCode[i] = o.optInt("code");
                }
                break;
            }
            case "dpart": {
                int i = o.optInt("part");
                if (i >= 0 && i < r.parts) {
                    r.delivSeen[i] = true;
                    r.delivOk[i] = o.optBoolean("ok");
                }
                break;
            }
            case "sent":
                r.state = State.SENT;
                break;
            case "failed":
                r.state = State.FAILED;
                r.reason = o.optString("reason");
                break;
            case "receipt":
                r.receiptDone = true;
                break;
            case "forget":
                recs.remove(id);
                break;
            default:
                break;
        }
    }

    /** Why a send whose outcome was lost (the app was stopped mid-send) is not sent again. */
    public static final String UNKNOWN_OUTCOME =
            "the phone may or may not have sent this message (the app was stopped while sending it); not sending it twice";

    /** Answers result from rec if the send is over (sent: ok; failed: for good, with its reason). */
    public static boolean answer(Rec rec, net.rcsgate.phone.core.Result result) {
        switch (rec.state) {
            case SENT:
                result.ok();
                return true;
            case FAILED:
                result.fail(true, rec.reason);
                return true;
            default:
                return false;
        }
    }

    public synchronized Rec get(String id) {
        return recs.get(id);
    }

    public synchronized Rec start(String id, String chat, int parts, long now) throws IOException {
        write(obj(id, "start").put("chat", chat).put("parts", parts).put("at", now));
        return recs.get(id);
    }

    public synchronized void part(String id, int part, boolean ok, int code) throws IOException {
        write(obj(id, "part").put("part", part).put("ok", ok).put("code", code));
    }

    public synchronized void deliveredPart(String id, int part, boolean ok) throws IOException {
        write(obj(id, "dpart").put("part", part).put("ok", ok));
    }

    public synchronized void sent(String id) throws IOException {
        write(obj(id, "sent"));
    }

    public synchronized void failed(String id, String reason) throws IOException {
        write(obj(id, "failed").put("reason", reason));
    }

    public synchronized void receiptDone(String id) throws IOException {
        write(obj(id, "receipt"));
    }

    /** The send never left the phone: a retry may send it. */
    public synchronized void forget(String id) throws IOException {
        write(obj(id, "forget"));
    }

    private static Obj obj(String id, String op) {
        return new Obj().put("id", id).put("op", op);
    }

    /** JSONObject without checked exceptions. */
    static final class Obj {
        final JSONObject o = new JSONObject();

        Obj put(String k, Object v) {
            try {
                o.put(k, v);
            } catch (JSONException e) {
                throw new IllegalStateException(e);
            }
            return this;
        }
    }

    private void write(Obj line) throws IOException {
        apply(line.o);
        out.write((line.o.toString() + "\n").getBytes(StandardCharsets.UTF_8));
        out.getFD().sync();
        lines++;
        if (lines > 2 * KEEP && lines > 4 * recs.size()) compact(System.currentTimeMillis());
    }

    /** Keeps the newest KEEP records of the last week (and every unfinished one). */
    void compact(long now) throws IOException {
        int drop = Math.max(0, recs.size() - KEEP);
        java.util.Iterator<Map.Entry<String, Rec>> it = recs.entrySet().iterator();
        while (it.hasNext()) {
            Rec r = it.next().getValue();
            boolean old = now - r.startedAt > KEEP_MS;
            if (r.state != State.STARTED && (drop > 0 || old)) {
                it.remove();
                if (drop > 0) drop--;
            }
        }
        File tmp = new File(file.getPath() + ".tmp");
        int n = 0;
        try (FileOutputStream o = new FileOutputStream(tmp)) {
            StringBuilder sb = new StringBuilder();
            for (Rec r : recs.values()) {
                sb.append(obj(r.id, "start").put("chat", r.chat).put("parts", r.parts).put("at", r.startedAt).o).append('\n');
                n++;
                for (int i = 0; i < r.parts; i++) {
                    if (r.sentSeen[i]) {
                        sb.append(obj(r.id, "part").put("part", i).put("ok", r.sentOk[i]).put("code", r.sentCode[i]).o).append('\n');
                        n++;
                    }
                    if (r.delivSeen[i]) {
                        sb.append(obj(r.id, "dpart").put("part", i).put("ok", r.delivOk[i]).o).append('\n');
                        n++;
                    }
                }
                if (r.state == State.SENT) sb.append(obj(r.id, "sent").o).append('\n');
                if (r.state == State.FAILED) sb.append(obj(r.id, "failed").put("reason", r.reason).o).append('\n');
                if (r.receiptDone) sb.append(obj(r.id, "receipt").o).append('\n');
                n += 2;
            }
            o.write(sb.toString().getBytes(StandardCharsets.UTF_8));
            o.getFD().sync();
        }
        out.close();
        Files.move(tmp.toPath(), file.toPath(), StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        out = new FileOutputStream(file, true);
        lines = n;
    }

    public synchronized int size() {
        return recs.size();
    }

    public synchronized void close() throws IOException {
        out.close();
    }
}
