"""What every marketplace channel shares (Mercado Libre, Shopee; later eBay, AliExpress, DHgate,
Lazada): notify-then-fetch plus a reconciliation poll, OAuth calls through the token store,
reads paced by the shared limiter, and the site → market/language table."""
