package net.rcsgate.phone.core;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

/**
 * The app's durable inbox: events the phone received that the agent has not acked yet. A
 * broadcast receiver puts the SMS here (fsync'd) before it returns, so a process death between
 * the broadcast and the agent's ack loses nothing; the AgentLink offers every event in here until
 * the agent acks it. Ids dedupe: an id put again while waiting, or acked recently, is not stored
 * twice.
 *
 * <p>On disk: one append-only file of lines "+{event json}" (put) and "-id" (acked). A torn last
 * line (a crash mid-write) was never acknowledged to anyone and is dropped. The file is rewritten
 * with only the waiting events once it holds mostly acked ones.
 */
public final class Inbox implements EventSink {
    /** Events waiting at most; beyond, put fails (the platform keeps its own copy of an SMS). */
    public static final int MAX_WAITING = 10000;
    /** Recently acked ids remembered for dedupe. */
    static final int REMEMBER_ACKED = 2000;
    /** Longest line read back; longer ones are from a broken file and skipped. */
    static final int MAX_LINE = 1 << 20;

    public interface Listener {
        void onPut(Event ev);
    }

    private final File file;
    private final LinkedHashMap<String, Event> waiting = new LinkedHashMap<>();
    private final LinkedHashMap<String, Boolean> acked = new LinkedHashMap<String, Boolean>() {
        @Override
        protected boolean removeEldestEntry(java.util.Map.Entry<String, Boolean> e) {
            return size() > REMEMBER_ACKED;
        }
    };
    private final List<Listener> listeners = new CopyOnWriteArrayList<>();
    private FileOutputStream out;
    private int lines;
    private int skipped;
    int compactAfter = 1000; // lines; tests lower it

    public Inbox(File file) throws IOException {
        this.file = file;
        load();
        out = new FileOutputStream(file, true);
    }

    private void load() throws IOException {
        if (!file.exists()) return;
        byte[] all = Files.readAllBytes(file.toPath());
        int start = 0;
        for (int i = 0; i < all.length; i++) {
            if (all[i] != '\n') continue;
            apply(new String(all, start, i - start, StandardCharsets.UTF_8));
            start = i + 1;
        }
        if (start < all.length) {
            skipped++; // torn tail: never fsync'd, never acknowledged
            try (FileChannel ch = FileChannel.open(file.toPath(), StandardOpenOption.WRITE)) {
                ch.truncate(start);
                ch.force(true);
            }
        }
    }

    private void apply(String line) {
        lines++;
        if (line.length() > MAX_LINE || line.isEmpty()) {
            skipped++;
            return;
        }
        if (line.charAt(0) == '+') {
            try {
                Event ev = Event.parse(line.substring(1));
                if (!acked.containsKey(ev.id())) waiting.put(ev.id(), ev);
            } catch (IllegalArgumentException e) {
                skipped++;
            }
        } else if (line.charAt(0) == '-') {
            String id = line.substring(1);
            waiting.remove(id);
            acked.put(id, Boolean.TRUE);
        } else {
            skipped++;
        }
    }

    public void addListener(Listener l) {
        listeners.add(l);
    }

    public void removeListener(Listener l) {
        listeners.remove(l);
    }

    /** Lines of the file that could not be read back (a torn tail, damage). */
    public synchronized int skipped() {
        return skipped;
    }

    @Override
    public void put(Event ev) throws IOException {
        synchronized (this) {
            String id = ev.id();
            if (!Ids.valid(id)) throw new IOException("event id is not valid: the app has a bug");
            if (waiting.containsKey(id) || acked.containsKey(id)) return;
            if (waiting.size() >= MAX_WAITING) {
                throw new IOException("the app holds " + MAX_WAITING + " messages the agent has not taken; is it running?");
            }
            append("+" + ev.line());
            waiting.put(id, ev);
        }
        for (Listener l : listeners) l.onPut(ev);
    }

    /** The agent stored the event: forget it. */
    public synchronized void ack(String id) throws IOException {
        if (waiting.remove(id) == null) return;
        acked.put(id, Boolean.TRUE);
        append("-" + id);
        if (lines > compactAfter && lines > 4 * (waiting.size() + 1)) compact();
    }

    /** Drops every waiting event (the phone was unpaired); returns how many. */
    public synchronized int clear() throws IOException {
        List<String> ids = new ArrayList<>(waiting.keySet());
        for (String id : ids) ack(id);
        return ids.size();
    }

    /** Events waiting for the agent, oldest first. */
    public synchronized List<Event> waiting() {
        return new ArrayList<>(waiting.values());
    }

    public synchronized int size() {
        return waiting.size();
    }

    public synchronized boolean isWaiting(String id) {
        return waiting.containsKey(id);
    }

    private void append(String line) throws IOException {
        byte[] b = (line + "\n").getBytes(StandardCharsets.UTF_8);
        out.write(b);
        out.getFD().sync();
        lines++;
    }

    /** Rewrites the file with only the waiting events (and recent acks), atomically. */
    private void compact() throws IOException {
        File tmp = new File(file.getPath() + ".tmp");
        try (FileOutputStream o = new FileOutputStream(tmp)) {
            ByteArrayOutputStream buf = new ByteArrayOutputStream();
            for (String id : acked.keySet()) buf.write(("-" + id + "\n").getBytes(StandardCharsets.UTF_8));
            for (Event ev : waiting.values()) buf.write(("+" + ev.line() + "\n").getBytes(StandardCharsets.UTF_8));
            buf.writeTo(o);
            o.getFD().sync();
        }
        out.close();
        Files.move(tmp.toPath(), file.toPath(), StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        syncDir(file.getParentFile());
        out = new FileOutputStream(file, true);
        lines = acked.size() + waiting.size();
    }

    static void syncDir(File dir) {
        // A directory's fsync makes the rename durable; not every platform allows opening one.
        try (FileChannel ch = FileChannel.open(dir.toPath(), StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException | RuntimeException ignored) {
            // best effort
        }
    }

    public synchronized void close() throws IOException {
        out.close();
    }
}
