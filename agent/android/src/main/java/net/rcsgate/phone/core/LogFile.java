package net.rcsgate.phone.core;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;

/**
 * A bounded log file: the agent's stderr (already free of message text, numbers and keys: the
 * agent redacts its logs) and the app's own notes. At 1 MiB the file becomes NAME.1 and a new one
 * starts, so at most 2 MiB are kept.
 */
public final class LogFile {
    static final long MAX_BYTES = 1 << 20;
    private final File file;
    private FileOutputStream out;
    private long size;

    public LogFile(File file) {
        this.file = file;
    }

    public synchronized void line(String s) {
        try {
            if (out == null) {
                out = new FileOutputStream(file, true);
                size = file.length();
            }
            byte[] b = (s + "\n").getBytes(StandardCharsets.UTF_8);
            out.write(b);
            size += b.length;
            if (size > MAX_BYTES) {
                out.close();
                out = null;
                File old = new File(file.getPath() + ".1");
                if (!file.renameTo(old)) file.delete();
            }
        } catch (IOException ignored) {
            // a log must never take the app down
        }
    }

    public File file() {
        return file;
    }
}
