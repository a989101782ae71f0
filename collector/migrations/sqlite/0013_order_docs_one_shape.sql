-- Order documents now leave out a history entry's absent quote, as the API's other routes do:
-- rebuild every document (the store builds those still '{}' when it opens).
UPDATE orders SET doc = '{}';
