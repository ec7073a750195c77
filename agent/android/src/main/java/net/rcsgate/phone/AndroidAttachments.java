package net.rcsgate.phone;

import android.content.Context;
import android.database.Cursor;
import android.net.Uri;
import android.provider.OpenableColumns;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import net.rcsgate.phone.rcs.Attachments;

/**
 * Copies a file a notification points to. The messaging apps grant their notification images to
 * the system UI, not to listeners, so this usually fails with a SecurityException and the path
 * sends a notice instead; it works where an app shares the URI more widely.
 */
final class AndroidAttachments implements Attachments {
    private final Context ctx;

    AndroidAttachments(Context ctx) {
        this.ctx = ctx;
    }

    @Override
    public Copy copy(String uri, String mime, File dest, long maxBytes) throws IOException {
        Uri u = Uri.parse(uri);
        if (!"content".equals(u.getScheme())) throw new IOException("not a content URI");
        MessageDigest md;
        try {
            md = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IOException(e);
        }
        long size = 0;
        try (InputStream in = ctx.getContentResolver().openInputStream(u); FileOutputStream out = new FileOutputStream(dest)) {
            if (in == null) throw new IOException("no stream");
            byte[] buf = new byte[64 * 1024];
            for (int n; (n = in.read(buf)) > 0; ) {
                size += n;
                if (size > maxBytes) throw new IOException("larger than " + maxBytes + " bytes");
                md.update(buf, 0, n);
                out.write(buf, 0, n);
            }
            out.getFD().sync();
        } catch (SecurityException | IllegalArgumentException | IllegalStateException e) {
            throw new IOException("not readable: " + e.getClass().getSimpleName());
        } catch (IOException e) {
            if (!dest.delete()) dest.deleteOnExit();
            throw e;
        }
        StringBuilder hex = new StringBuilder();
        for (byte b : md.digest()) hex.append(String.format("%02x", b & 0xff));
        return new Copy(dest, size, hex.toString(), displayName(u));
    }

    private String displayName(Uri u) {
        try (Cursor c = ctx.getContentResolver().query(u, new String[] {OpenableColumns.DISPLAY_NAME}, null, null, null)) {
            if (c != null && c.moveToFirst()) {
                String n = c.getString(0);
                if (n != null && n.length() <= 255 && n.indexOf('/') < 0) return n;
            }
        } catch (RuntimeException e) {
            // no name: the path picks one
        }
        return null;
    }
}
