/**
 * Whole-word vocabulary of the simulator tokenizer: common English words of 4+ letters (shorter words are
 * already single tokens through the 1–3 letter chunk tables), a few technical words and the lorem-ipsum
 * words test fixtures like to use. Each word gets four ids: `word`, ` word`, `Word`, ` Word`.
 * The order of this list is part of the id assignment: append only, never reorder (ids must stay stable).
 */
const RAW = `
about above across after again against almost alone along already also although always among another answer
anything appear area around asked away back because become been before began begin behind being believe below
best better between both bring brought build built business call came cannot care carry case cause center certain
change children city class clear close cold come common company complete could country course cover cross current
dark data days dead deal death decide deep develop didn different does done door down draw during each early earth
east easy either else end enough even evening ever every example experience face fact fall family father feel feet
field figure final find fine fire first five follow food force form found four free friend from front full game gave
general give given going gone good government great green ground group grow half hand happen hard have head hear heard
heart heavy help here high himself history hold home hope hour house however human hundred idea important include
inside interest into itself just keep kind king knew know known land language large last late later lead learn least
leave left less letter life light like line list listen little live long look lost love made main make many mark
material matter mean measure might mind minute miss model moment money month more morning most mother move much music
must name nation nature near need never next night nothing notice number often once only open order other over own
page paper part pass past people perhaps person picture piece place plan plant play point position possible power
present problem process produce product program provide public pull question quite rather reach read ready real
reason receive record remember rest result return right river road rock room round rule same school science second
seem seen self sense sent service set several shall short should show side simple since single size small social
some something sometimes song soon sound south space speak special stand start state stay still stood stop story
street strong student study such sure surface system table take talk teach tell test than that their them then there
these they thing think third this those though thought thousand three through time today together told took toward
town tree true turn under unit until upon usually value very voice walk wall want warm watch water ways week well
went were west what when where whether which while white whole whose will wind window with within without woman women
wonder word words work world would write written wrong year years young your
account action activity actually address against agree allow already amount analysis anyone application approach
argument article attention available average baby base basic beautiful bank bill body book both break brother budget
camera cancer candidate capital card career cell century chair challenge chance character charge check choice choose
church citizen claim coach collection college color commercial community compare computer concern condition
conference consider consumer contain continue control cost couple create crime cultural culture customer debate
decade decision defense degree democratic describe design despite detail determine development difference difficult
dinner direction director discover discuss discussion disease doctor down drive economic economy edge education effect
effort eight election employee energy enjoy entire environment environmental especially establish evidence exactly
executive exist expect expert explain factor fail federal feeling fight film financial firm floor focus foreign forget
former forward future garden glass goal growth guess hair health herself hospital hotel huge husband image imagine
impact improve increase indeed indicate individual industry information instead institution international interview
investment involve issue item itself job join kitchen knowledge large lawyer leader learn legal level likely local
machine magazine maintain major majority manage management manager market marriage media medical meeting member memory
mention message method middle military million minute mission modern movement movie myself national natural network
news newspaper nice north note occur offer office officer official operation opportunity option organization others
outside painting parent particular partner party patient pattern peace perform performance period physical plan player
police policy political politics poor popular population positive practice prepare pressure pretty prevent price
private probably professional professor property protect prove purpose quality quickly radio range rate really
recent recently recognize reduce reflect region relate relationship religious remain report represent republican
require research resource respond response responsibility rich rise risk role rule safe save scene season seat
security seek sell send senior series serious serve seven shake share shoot shot shoulder sign significant similar
sister situation skill smile soldier somebody someone son sort source southern speech spend sport spring staff stage
standard statement station step stock store strategy structure stuff style subject success successful suddenly
suffer suggest summer support table task teacher team technology television tend term terms thank theory these
threat throughout thus tonight total tough track trade traditional training travel treat treatment trial trip trouble
truth try type understand unit upon vote wait wear weight whatever wide wife wish worker worry yard yeah yourself
assistant user system context window cache token tokens request response server client model memory conversation
session freeze thaw frozen prompt completion message content function return const string number object array error
value index query result config default option options server daemon socket buffer stream chunk block hash
lorem ipsum dolor amet consectetur adipiscing elit eiusmod tempor incididunt labore dolore magna aliqua enim minim
veniam quis nostrud exercitation ullamco laboris nisi aliquip commodo consequat duis aute irure reprehenderit
voluptate velit esse cillum fugiat nulla pariatur excepteur sint occaecat cupidatat proident sunt culpa officia
deserunt mollit anim laborum
`;

function buildWordList(): readonly string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const w of RAW.split(/\s+/)) {
    if (w.length >= 4 && /^[a-z]+$/.test(w) && !seen.has(w)) {
      seen.add(w);
      out.push(w);
    }
  }
  return out;
}

/** Deduplicated lowercase words, in id order. */
export const WORDS: readonly string[] = buildWordList();

/** Words the deterministic generator draws from (short and long, all single tokens). */
export const GENERATION_WORDS: readonly string[] = [
  'the',
  'of',
  'and',
  'to',
  'in',
  'is',
  'it',
  'for',
  'on',
  'was',
  'as',
  'with',
  'that',
  'this',
  'from',
  'are',
  'not',
  'but',
  'all',
  'can',
  'one',
  'has',
  'new',
  'more',
  'time',
  'when',
  'what',
  'some',
  'into',
  'also',
  'most',
  'only',
  'over',
  'such',
  'work',
  'world',
  'state',
  'river',
  'light',
  'water',
  'system',
  'cache',
  'model',
  'memory',
  'context',
  'window',
  'token',
  'session',
  'answer',
  'question',
  'people',
  'place',
  'number',
  'small',
  'great',
  'large',
  'simple',
  'result',
  'change',
  'process',
  'value',
  'block',
  'stream',
  'field',
];
