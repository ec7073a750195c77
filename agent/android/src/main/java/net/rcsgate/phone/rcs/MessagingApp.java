package net.rcsgate.phone.rcs;

import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Locale;

/**
 * What the RCS path knows about one messaging app, kept as data: its package, how its compose
 * screen names the text field and the send control (view ids, then content descriptions in the
 * languages we know), and how its notification actions are labelled where an app sets no semantic
 * action. When an app update renames a control, this table is what changes.
 *
 * <p>Sources (facts only, nothing copied): view ids and labels as they appear in public UI
 * automation code that drives these apps (Appium page objects and uiautomator dumps on GitHub,
 * found with a code search in 2026): Google Messages' Jetpack Compose screen exposes the test tag
 * "Compose:Draft:Send" as the resource id of the send control (an android.view.View whose child
 * android.widget.Button takes the click); its older View screen used
 * com.google.android.apps.messaging:id/send_message_button_icon (ImageView, content description
 * "Send SMS" / "Send MMS", Italian "Invia SMS") inside send_message_button_container, with the text
 * field compose_message_text. Samsung Messages uses com.samsung.android.messaging:id/send_button
 * (ImageButton; send_button1 on some versions, send_button_icon on others; content description in
 * the phone's language, e.g. Hebrew "שלח") with the field message_edit_text (editor_body,
 * composer_edit_text on other versions). Labels in other languages are the usual Android
 * translations and are only a fallback behind the view ids; a real phone in that language is the
 * test.
 */
public final class MessagingApp {
    public static final String GOOGLE = "com.google.android.apps.messaging";
    public static final String SAMSUNG = "com.samsung.android.messaging";

    public final String pkg;
    /** For people: "Google Messages". */
    public final String label;
    /** View ids of the send control, most specific first. */
    public final List<String> sendIds;
    /** Content descriptions (or texts) of the send control, compared without case. */
    public final List<String> sendLabels;
    /** View ids of the message text field. */
    public final List<String> composeIds;
    /** Titles of the mark-as-read action, for apps that do not set its semantic action. */
    public final List<String> markReadLabels;
    /** Titles of the reply action, for apps that do not set its semantic action. */
    public final List<String> replyLabels;

    MessagingApp(String pkg, String label, List<String> sendIds, List<String> sendLabels, List<String> composeIds,
            List<String> markReadLabels, List<String> replyLabels) {
        this.pkg = pkg;
        this.label = label;
        this.sendIds = Collections.unmodifiableList(sendIds);
        this.sendLabels = Collections.unmodifiableList(sendLabels);
        this.composeIds = Collections.unmodifiableList(composeIds);
        this.markReadLabels = Collections.unmodifiableList(markReadLabels);
        this.replyLabels = Collections.unmodifiableList(replyLabels);
    }

    static final List<String> SEND_LABELS = Arrays.asList(
            "send", "send sms", "send mms", "send message", "send rcs message", "send encrypted message", // en
            "senden", "sms senden", "nachricht senden", // de
            "envoyer", "envoyer un sms", // fr
            "enviar", "enviar sms", "enviar mensaje", "enviar mensagem", // es, pt
            "invia", "invia sms", "invia messaggio", // it
            "verzenden", "sms verzenden", // nl
            "wyślij", "отправить", "gönder", "שלח", "إرسال", "送信", "发送", "보내기");
    static final List<String> MARK_READ_LABELS = Arrays.asList(
            "mark as read", "mark read", "als gelesen markieren", "marquer comme lu", "marcar como leído",
            "marcar como lida", "segna come letto", "markeren als gelezen", "oznacz jako przeczytane",
            "отметить как прочитанное", "okundu olarak işaretle");
    static final List<String> REPLY_LABELS = Arrays.asList(
            "reply", "antworten", "répondre", "responder", "rispondi", "beantwoorden", "odpowiedz", "ответить", "yanıtla");

    public static final List<MessagingApp> ALL = Collections.unmodifiableList(Arrays.asList(
            new MessagingApp(GOOGLE, "Google Messages",
                    Arrays.asList("Compose:Draft:Send", GOOGLE + ":id/send_message_button_icon", GOOGLE + ":id/send_message_button_container",
                            GOOGLE + ":id/send_message_button"),
                    SEND_LABELS,
                    Arrays.asList(GOOGLE + ":id/compose_message_text"),
                    MARK_READ_LABELS, REPLY_LABELS),
            new MessagingApp(SAMSUNG, "Samsung Messages",
                    Arrays.asList(SAMSUNG + ":id/send_button", SAMSUNG + ":id/send_button1", SAMSUNG + ":id/send_button_icon"),
                    SEND_LABELS,
                    Arrays.asList(SAMSUNG + ":id/message_edit_text", SAMSUNG + ":id/editor_body", SAMSUNG + ":id/composer_edit_text"),
                    MARK_READ_LABELS, REPLY_LABELS)));

    /** The profile of pkg, or null for an app the RCS path does not read. */
    public static MessagingApp of(String pkg) {
        for (MessagingApp a : ALL) if (a.pkg.equals(pkg)) return a;
        return null;
    }

    static boolean labelIn(CharSequence s, List<String> labels) {
        if (s == null) return false;
        String t = s.toString().trim().toLowerCase(Locale.ROOT);
        return !t.isEmpty() && labels.contains(t);
    }

    /** The notification's reply action: semantic REPLY, else a free-form input labelled "Reply". */
    public Posted.Act replyAction(List<Posted.Act> acts) {
        Posted.Act labelled = null;
        Posted.Act any = null;
        for (Posted.Act a : acts) {
            if (!a.freeFormInput) continue;
            if (a.semantic == Posted.SEMANTIC_REPLY) return a;
            if (labelled == null && labelIn(a.title, replyLabels)) labelled = a;
            if (any == null) any = a;
        }
        return labelled != null ? labelled : any;
    }

    /** The notification's mark-as-read action: semantic MARK_AS_READ, else by its title. */
    public Posted.Act markReadAction(List<Posted.Act> acts) {
        for (Posted.Act a : acts) if (a.semantic == Posted.SEMANTIC_MARK_AS_READ && !a.freeFormInput) return a;
        for (Posted.Act a : acts) if (!a.freeFormInput && labelIn(a.title, markReadLabels)) return a;
        return null;
    }
}
