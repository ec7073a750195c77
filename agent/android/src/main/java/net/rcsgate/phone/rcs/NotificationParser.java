package net.rcsgate.phone.rcs;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import net.rcsgate.phone.core.Ids;

/**
 * Reads a messaging app's conversation notification (MessagingStyle) into a Conversation: which
 * chat it is, group or 1:1, and each message's sender, text, time and file. It never throws on
 * what an app (or a broken Bundle) hands it: missing fields fall back, oversized ones are cut, and
 * what is not a conversation gives null.
 *
 * <p>Who is who: a message without a sender is the phone's owner's (MessagingStyle's convention).
 * A sender's number comes from its Person's "tel:" URI, else its key or name when they are written
 * as a number (the apps show unknown senders by number), else from the contacts. A 1:1 chat
 * without any number is "c:" + a hash of the app and the conversation's key, so a Matrix reply
 * comes back to the same conversation; a group is "g:" + that hash and its members without number
 * are "c:" + a hash of the app, the conversation and the name.
 */
public final class NotificationParser {
    /** Messages read per notification at most (the newest are kept). */
    static final int MAX_MESSAGES = 100;
    /** The bridge takes 64 KiB of text per message; longer texts are cut with a note. */
    static final int MAX_TEXT_BYTES = 60 * 1024;
    /** Names, group names: the bridge's limit. */
    static final int MAX_NAME_BYTES = 256;
    /** Conversation keys are hashed; this bounds what is hashed. */
    static final int MAX_KEY_CHARS = 1024;
    static final String CUT = " […]";

    private final Contacts contacts;

    public NotificationParser(Contacts contacts) {
        this.contacts = contacts == null ? Contacts.NONE : contacts;
    }

    /** The conversation p shows, or null (a summary, an app we do not read, nothing to read). */
    public Conversation parse(Posted p) {
        if (p == null || p.groupSummary || MessagingApp.of(p.pkg) == null) return null;
        String title = clean(p.title, MAX_NAME_BYTES);
        String convTitle = clean(p.conversationTitle, MAX_NAME_BYTES);
        String key = nonEmpty(clean(p.shortcutId, MAX_KEY_CHARS));
        if (key == null) key = nonEmpty(convTitle);
        if (key == null) key = nonEmpty(title);
        if (key == null) return null;

        List<Posted.Msg> raw = new ArrayList<>();
        for (Posted.Msg m : p.messages) if (m != null) raw.add(m);
        if (raw.isEmpty() && nonEmpty(clean(p.text, MAX_TEXT_BYTES)) != null) {
            // Not MessagingStyle: the title is the sender, the text the newest message.
            Posted.Msg m = new Posted.Msg(p.text, p.postTime, title);
            raw.add(m);
        }
        if (raw.isEmpty()) return null;
        if (raw.size() > MAX_MESSAGES) raw = raw.subList(raw.size() - MAX_MESSAGES, raw.size());

        String selfName = nonEmpty(clean(p.selfName, MAX_NAME_BYTES));
        String selfKey = nonEmpty(clean(p.selfKey, MAX_KEY_CHARS));
        List<Boolean> self = new ArrayList<>();
        String firstOther = null;
        boolean severalOthers = false;
        for (Posted.Msg m : raw) {
            boolean me = isSelf(m, selfName, selfKey);
            self.add(me);
            if (!me) {
                String who = identity(m);
                if (firstOther == null) firstOther = who;
                else if (!firstOther.equals(who)) severalOthers = true;
            }
        }
        // The flag, or a conversation title with several people writing: the framework writes
        // the flag as false for apps that never set it (and older apps mark groups by the title).
        boolean group = Boolean.TRUE.equals(p.isGroup) || (convTitle != null && !convTitle.isEmpty() && severalOthers);

        String convHash = Ids.hashed("", p.pkg, key);
        String chat;
        String name;
        if (group) {
            chat = "g:" + convHash;
            name = convTitle != null && !convTitle.isEmpty() ? convTitle : (title == null ? "" : title);
        } else {
            // The partner: the newest message from someone else, else the title.
            Posted.Msg partner = null;
            for (int i = raw.size() - 1; i >= 0 && partner == null; i--) if (!self.get(i)) partner = raw.get(i);
            String pname = partner != null ? clean(partner.senderName, MAX_NAME_BYTES) : null;
            if (pname == null || pname.isEmpty()) pname = title;
            String number = partner != null ? numberOf(partner) : null;
            if (number == null) number = Numbers.parse(title);
            if (number == null) number = Numbers.parse(convTitle);
            if (number == null) number = contactsNumber(partner != null ? partner.senderUri : null, pname);
            chat = number != null ? number : "c:" + convHash;
            name = pname == null ? "" : pname;
        }
        Conversation c = new Conversation(p.pkg, key, chat, group, name);
        for (int i = 0; i < raw.size(); i++) {
            Posted.Msg m = raw.get(i);
            boolean me = self.get(i);
            String senderName = me ? "" : nonNull(clean(m.senderName, MAX_NAME_BYTES));
            String from;
            if (me) {
                from = "";
            } else if (!group) {
                from = chat;
            } else {
                String n = numberOf(m);
                if (n == null) n = contactsNumber(m.senderUri, senderName);
                from = n != null ? n : "c:" + Ids.hashed("", p.pkg, key, identity(m));
            }
            String text = nonNull(clean(m.text, MAX_TEXT_BYTES));
            String mime = clean(m.mime, 127);
            String uri = clean(m.dataUri, 4096);
            if (mime == null || mime.isEmpty() || uri == null || uri.isEmpty()) {
                mime = null;
                uri = null;
            }
            if (text.isEmpty() && uri == null) continue; // nothing to show
            long time = m.time > 0 ? m.time : p.postTime;
            String id = Ids.hashed("rcs-", p.pkg, key, Long.toString(time), me ? "me" : identity(m), text, uri == null ? "" : uri);
            c.messages.add(new Conversation.Message(id, me, from, senderName, text, time, mime, uri));
        }
        return c.messages.isEmpty() ? null : c;
    }

    /** The phone's owner: no sender at all, or the owner's own Person. */
    static boolean isSelf(Posted.Msg m, String selfName, String selfKey) {
        if (m.noSender) return true;
        String key = nonEmpty(m.senderKey);
        if (selfKey != null && selfKey.equals(key)) return true;
        return key == null && nonEmpty(m.senderUri) == null && selfName != null && selfName.equals(nonEmpty(m.senderName));
    }

    /** A sender's identity within its conversation: key, else URI, else name. */
    static String identity(Posted.Msg m) {
        String k = nonEmpty(clean(m.senderKey, MAX_KEY_CHARS));
        if (k != null) return "k:" + k;
        String u = nonEmpty(clean(m.senderUri, MAX_KEY_CHARS));
        if (u != null) return "u:" + u;
        return "n:" + nonNull(clean(m.senderName, MAX_NAME_BYTES));
    }

    /** The number a message's sender carries itself (tel: URI, key, or a name that is a number). */
    static String numberOf(Posted.Msg m) {
        String n = Numbers.fromUri(m.senderUri);
        if (n == null) n = Numbers.parse(m.senderKey);
        if (n == null) n = Numbers.parse(m.senderName);
        return n;
    }

    private String contactsNumber(String uri, String name) {
        try {
            return Numbers.parse(contacts.number(nonEmpty(uri), nonEmpty(name)));
        } catch (RuntimeException e) {
            return null; // the contacts provider failed: the name stays
        }
    }

    /** s without control characters (but with line breaks), cut to max UTF-8 bytes (with a note if long). */
    static String clean(String s, int maxBytes) {
        if (s == null) return null;
        StringBuilder sb = new StringBuilder(Math.min(s.length(), maxBytes + 8));
        int bytes = 0;
        int keep = -1; // length of sb where the cut goes if s is too long
        int room = maxBytes > 64 ? maxBytes - CUT.getBytes(StandardCharsets.UTF_8).length : maxBytes;
        for (int i = 0; i < s.length(); ) {
            int cp = s.codePointAt(i);
            i += Character.charCount(cp);
            if (Character.isISOControl(cp) && cp != '\n' && cp != '\t') continue;
            if (cp >= 0xD800 && cp <= 0xDFFF) continue; // a lone surrogate is not UTF-8
            int n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
            if (keep < 0 && bytes + n > room) keep = sb.length();
            if (bytes + n > maxBytes) {
                sb.setLength(keep);
                if (maxBytes > 64) sb.append(CUT);
                break;
            }
            bytes += n;
            sb.appendCodePoint(cp);
        }
        return sb.toString().trim();
    }

    static String nonEmpty(String s) {
        return s == null || s.trim().isEmpty() ? null : s.trim();
    }

    static String nonNull(String s) {
        return s == null ? "" : s;
    }
}
