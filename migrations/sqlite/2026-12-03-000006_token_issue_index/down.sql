DROP INDEX api_tokens_created_at_idx;
