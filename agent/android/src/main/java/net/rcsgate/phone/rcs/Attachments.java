package net.rcsgate.phone.rcs;

import java.io.File;
import java.io.IOException;

/** Copies a file a notification points to (a content:// URI) into the app's storage. */
public interface Attachments {
    /** A copied file. */
    final class Copy {
        public final File file;
        public final long size;
        public final String sha256; // hex
        public final String name;

        public Copy(File file, long size, String sha256, String name) {
            this.file = file;
            this.size = size;
            this.sha256 = sha256;
            this.name = name;
        }
    }

    /**
     * Copies uri into dest (at most maxBytes). IOException when the app may not read it (the
     * messaging app usually grants its notification files to the system UI only), it is gone, or
     * it is larger than maxBytes.
     */
    Copy copy(String uri, String mime, File dest, long maxBytes) throws IOException;

    /** No access at all: every file becomes a notice. */
    Attachments NONE = (uri, mime, dest, max) -> {
        throw new IOException("files are not read");
    };
}
