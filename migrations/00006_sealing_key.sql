-- +goose Up

-- The fingerprint (secret.KeyID) of the key that sealed password_sealed, so
-- operators can count the rows that still need an old key without opening
-- them (cardbridge_sealed_passwords). NULL for rows sealed before this
-- column existed: unknown until `cardbridge keys reseal`, or the row's next
-- use, opens the password and records the key.
ALTER TABLE self_service_users ADD COLUMN sealing_key text;

-- +goose Down
ALTER TABLE self_service_users DROP COLUMN sealing_key;
