-- Operator tokens may expire: the unix time (ms) from which the token is
-- refused, like a revoked one. NULL: it never expires.
ALTER TABLE tokens ADD COLUMN expires_at_ms INTEGER;
