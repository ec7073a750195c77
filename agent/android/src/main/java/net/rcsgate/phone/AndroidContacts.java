package net.rcsgate.phone;

import android.Manifest;
import android.content.ContentResolver;
import android.content.Context;
import android.content.pm.PackageManager;
import android.database.Cursor;
import android.net.Uri;
import android.provider.ContactsContract;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.Map;
import java.util.Set;
import net.rcsgate.phone.rcs.Contacts;

/**
 * The phone's contacts for the RCS path, with READ_CONTACTS only: a notification's Person URI (a
 * contacts lookup URI) or display name to the one number behind it. Several contacts or several
 * numbers for one name give nothing: a wrong number would put a chat in the wrong room. Answers
 * are cached briefly (notifications repeat the same names).
 */
final class AndroidContacts implements Contacts {
    static final long CACHE_MS = 5 * 60 * 1000;

    private final Context ctx;
    private final Map<String, Object[]> cache = new LinkedHashMap<String, Object[]>() {
        @Override
        protected boolean removeEldestEntry(Map.Entry<String, Object[]> e) {
            return size() > 500;
        }
    };

    AndroidContacts(Context ctx) {
        this.ctx = ctx;
    }

    boolean allowed() {
        return ctx.checkSelfPermission(Manifest.permission.READ_CONTACTS) == PackageManager.PERMISSION_GRANTED;
    }

    @Override
    public synchronized String number(String uri, String name) {
        if (!allowed()) return null;
        String key = uri + "\n" + name;
        Object[] hit = cache.get(key);
        long now = System.currentTimeMillis();
        if (hit != null && now - (Long) hit[1] < CACHE_MS) return (String) hit[0];
        String n = null;
        try {
            if (uri != null && uri.startsWith("content://" + ContactsContract.AUTHORITY)) n = byLookupUri(Uri.parse(uri));
            if (n == null && name != null && !name.isEmpty()) n = byName(name);
        } catch (RuntimeException e) {
            n = null; // the provider failed or refused: the name stays
        }
        cache.put(key, new Object[] {n, now});
        return n;
    }

    private String byLookupUri(Uri lookup) {
        ContentResolver cr = ctx.getContentResolver();
        Uri contact = ContactsContract.Contacts.lookupContact(cr, lookup);
        if (contact == null) return null;
        String id = contact.getLastPathSegment();
        return single(cr.query(ContactsContract.CommonDataKinds.Phone.CONTENT_URI,
                new String[] {ContactsContract.CommonDataKinds.Phone.CONTACT_ID, ContactsContract.CommonDataKinds.Phone.NUMBER},
                ContactsContract.CommonDataKinds.Phone.CONTACT_ID + " = ?", new String[] {id}, null));
    }

    private String byName(String name) {
        return single(ctx.getContentResolver().query(ContactsContract.CommonDataKinds.Phone.CONTENT_URI,
                new String[] {ContactsContract.CommonDataKinds.Phone.CONTACT_ID, ContactsContract.CommonDataKinds.Phone.NUMBER},
                ContactsContract.CommonDataKinds.Phone.DISPLAY_NAME + " = ?", new String[] {name}, null));
    }

    /** The one number of the one contact in c, else null. */
    private static String single(Cursor c) {
        if (c == null) return null;
        try {
            Set<Long> contacts = new LinkedHashSet<>();
            Map<String, String> numbers = new LinkedHashMap<>(); // digits → as stored
            while (c.moveToNext() && numbers.size() < 8) {
                contacts.add(c.getLong(0));
                String n = c.getString(1);
                if (n == null) continue;
                String digits = n.replaceAll("[^0-9]", "");
                if (digits.length() > 9) digits = digits.substring(digits.length() - 9);
                if (!digits.isEmpty()) numbers.put(digits, n);
            }
            if (contacts.size() != 1 || numbers.size() != 1) return null;
            return numbers.values().iterator().next();
        } finally {
            c.close();
        }
    }
}
