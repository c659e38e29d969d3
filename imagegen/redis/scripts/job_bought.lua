-- Books an image Bedrock returned (and billed) for a job: its tenant's spend for the day and the
-- month (the reservation made at release becomes spend, in the periods it was reserved in), the
-- job's cost, and the fleet's image count (``book_image`` in the prelude).
-- KEYS: job hash. ARGV: model id, the model's price (micro-dollars), today (d:YYYY-MM-DD), this
-- month (m:YYYY-MM), ledger ttl s.
-- Returns the amount booked (micro-dollars).
return book_image(KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5]))
