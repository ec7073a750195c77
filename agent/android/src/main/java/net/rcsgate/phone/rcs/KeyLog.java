package net.rcsgate.phone.rcs;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A durable, bounded set of keys with the time each was added: which notification messages went
 * to Matrix already (so a re-post with the conversation's history, a listener reconnect, an app
 * restart or a reboot sends none twice), and short-lived fingerprints of recent traffic. At most
 * max keys, none older than ttl; the oldest go first. One append-only file of "time key" lines,
 * each fsync'd; rewritten with the live keys when it holds twice as many lines. A torn last line
 * (a crash mid-write) is dropped: that key was never reported as added.
 */
final class KeyLog {
    private final File file;
    private final int max;
    private final long ttlMs;
    private final LinkedHashMap<String, Long> keys = new LinkedHashMap<>();
    private FileOutputStream out;
    private int lines;

    KeyLog(File file, int max, long ttlMs) throws IOException {
        this.file = file;
        this.max = max;
        this.ttlMs = ttlMs;
        if (file.exists()) {
            String all = new String(Files.readAllBytes(file.toPath()), StandardCharsets.UTF_8);
            int end = all.lastIndexOf('\n');
            for (String line : (end < 0 ? "" : all.substring(0, end)).split("\n")) {
                int sp = line.indexOf(' ');
                if (sp <= 0 || sp == line.length() - 1) continue;
                try {
                    long at = Long.parseLong(line.substring(0, sp));
                    String k = line.substring(sp + 1);
                    keys.remove(k);
                    keys.put(k, at);
                    lines++;
                } catch (NumberFormatException e) {
                    // a damaged line: skipped
                }
            }
            trim(Long.MAX_VALUE);
            if (end < all.length() - 1 || lines > 2 * keys.size() + 100) rewrite();
        }
        out = new FileOutputStream(file, true);
    }

    synchronized boolean contains(String key) {
        return keys.containsKey(key);
    }

    synchronized void add(String key, long at) throws IOException {
        if (key.indexOf('\n') >= 0 || key.isEmpty()) throw new IllegalArgumentException("bad key");
        keys.remove(key);
        keys.put(key, at);
        out.write((at + " " + key + "\n").getBytes(StandardCharsets.UTF_8));
        out.getFD().sync();
        lines++;
        trim(at);
        if (lines > 2 * max + 100) {
            out.close();
            rewrite();
            out = new FileOutputStream(file, true);
        }
    }

    /** Keys added at or after since (and still kept), oldest first. */
    synchronized List<Map.Entry<String, Long>> since(long since) {
        List<Map.Entry<String, Long>> res = new ArrayList<>();
        for (Map.Entry<String, Long> e : keys.entrySet()) {
            if (e.getValue() >= since) res.add(new java.util.AbstractMap.SimpleImmutableEntry<>(e.getKey(), e.getValue()));
        }
        return res;
    }

    synchronized int size() {
        return keys.size();
    }

    /** Drops the oldest keys beyond max and, given the time now, those past the ttl. */
    private void trim(long now) {
        Iterator<Map.Entry<String, Long>> it = keys.entrySet().iterator();
        while (it.hasNext()) {
            Map.Entry<String, Long> e = it.next();
            boolean expired = now != Long.MAX_VALUE && ttlMs > 0 && e.getValue() < now - ttlMs;
            if (keys.size() <= max && !expired) break; // insertion order is (about) time order
            it.remove();
        }
    }

    private void rewrite() throws IOException {
        File tmp = new File(file.getPath() + ".tmp");
        StringBuilder sb = new StringBuilder();
        for (Map.Entry<String, Long> e : keys.entrySet()) sb.append(e.getValue()).append(' ').append(e.getKey()).append('\n');
        try (FileOutputStream o = new FileOutputStream(tmp)) {
            o.write(sb.toString().getBytes(StandardCharsets.UTF_8));
            o.getFD().sync();
        }
        Files.move(tmp.toPath(), file.toPath(), StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        lines = keys.size();
    }

    synchronized void close() throws IOException {
        out.close();
    }
}
