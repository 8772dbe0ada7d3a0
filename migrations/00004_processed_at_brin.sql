-- +goose NO TRANSACTION
-- +goose Up

-- The console lists the latest processed requests. Without an index that
-- sorts the whole inbox (170 ms at a million rows). The inbox is written in
-- time order and never updated, so a BRIN index (a few pages, next to no
-- cost per commit) finds the recent part of the table; the console asks
-- for a recent window first (store.RecentRequests). CONCURRENTLY, so that
-- the upgrade does not stop commits while the index is built.
CREATE INDEX CONCURRENTLY IF NOT EXISTS processed_requests_processed_at_brin
    ON processed_requests USING brin (processed_at);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS processed_requests_processed_at_brin;
