"""Mail from partitions: the node's relay, its rules and the partitions' ``sendmail``.

``rules`` decides (pure): who may send, from which address, how many an hour,
what the message gets. ``relay`` is the SMTP server the agent runs on the
bridge's gateway addresses (aiosmtpd), which passes accepted messages to the
master. ``sendmail`` is the program partitions call. docs/mail.md tells the whole
path.
"""
