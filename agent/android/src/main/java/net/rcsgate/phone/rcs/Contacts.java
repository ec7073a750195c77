package net.rcsgate.phone.rcs;

/** The phone's contacts, as far as the person allowed rcsgate to read them (READ_CONTACTS). */
public interface Contacts {
    /**
     * The number of the contact a notification names: by its Person URI (a contacts lookup URI)
     * if there is one, else by its display name. Null when unknown, ambiguous (several contacts
     * or several numbers) or not allowed.
     */
    String number(String uri, String name);

    /** Contacts that cannot be read: every conversation keeps the name it came with. */
    Contacts NONE = (uri, name) -> null;
}
