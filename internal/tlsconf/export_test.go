package tlsconf

// SharedLen is the number of contexts with shared configs.
var SharedLen = sharedLen
