"""The page's stylesheet and script (inlined into index.html under the CSP nonce).

No ``url(`` anywhere: the page must not reference any resource, image or font.
"""

CSS = r"""
:root{--bg:#f6f7f9;--panel:#fff;--ink:#1c2330;--muted:#667085;--line:#e3e6eb;--accent:#2f5bd3;
--crit:#b42318;--crit-bg:#fde8e6;--high:#c4320a;--high-bg:#fdeee4;--med:#a15c07;--med-bg:#fdf4dc;--low:#475467;--low-bg:#eef0f3;
--ok:#067647;--ok-bg:#e3f6ec;--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
*{box-sizing:border-box}
html{font:13px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--ink);background:var(--bg)}
body{margin:0}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
.muted{color:var(--muted)}.small{font-size:11px}.mono,code{font-family:var(--mono);font-size:11.5px}
.bar{position:sticky;top:0;z-index:10;display:flex;gap:14px;align-items:center;padding:8px 18px;background:#111827;color:#e5e7eb;box-shadow:0 1px 0 #0003}
.brand{display:flex;gap:8px;align-items:baseline;white-space:nowrap}.logo{font-weight:700;letter-spacing:.04em;text-transform:uppercase;font-size:12px;color:#fff}
.idx{color:#9ca3af;max-width:200px;overflow:hidden;text-overflow:ellipsis}
.filters{display:flex;gap:8px;align-items:center;flex:1;flex-wrap:nowrap;min-width:0}
.bar input,.bar select{background:#1f2937;color:#f3f4f6;border:1px solid #374151;border-radius:6px;padding:5px 8px;font:inherit}
.bar input:focus,.bar select:focus{outline:2px solid #6b8cff;outline-offset:0}
#q{width:200px;flex:0 1 200px;min-width:90px}#shown{white-space:nowrap;font-size:12px;color:#9ca3af}.bar select{max-width:170px}
.chips{display:flex;gap:4px;flex-shrink:0}
.chip{border:1px solid #374151;background:#1f2937;color:#9ca3af;border-radius:999px;padding:3px 10px;font:inherit;font-size:12px;cursor:pointer}
.chip.zero{opacity:.45}.chip b{font-weight:600;margin-left:3px;color:#e5e7eb}
.chip[aria-pressed=true].sev-critical{background:var(--crit);border-color:var(--crit);color:#fff}
.chip[aria-pressed=true].sev-high{background:var(--high);border-color:var(--high);color:#fff}
.chip[aria-pressed=true].sev-medium{background:var(--med);border-color:var(--med);color:#fff}
.chip[aria-pressed=true].sev-low{background:#4b5563;border-color:#4b5563;color:#fff}
.chip[aria-pressed=true] b{color:#fff}
.actions{display:flex;gap:8px;align-items:center}#reviewer{width:130px}
button{font:inherit;cursor:pointer}
.primary{background:var(--accent);color:#fff;border:0;border-radius:6px;padding:6px 12px;font-weight:600}
.primary b{background:#fff3;border-radius:999px;padding:0 7px;margin-left:4px}
.ghost{background:transparent;color:#d1d5db;border:1px solid #374151;border-radius:6px;padding:5px 10px}
main{max-width:1500px;margin:0 auto;padding:18px}
h1{font-size:18px;margin:0 0 12px;font-weight:650}h1 .muted{font-weight:400}
#summary{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:16px 18px;margin-bottom:18px}
.notice{border-radius:6px;padding:8px 12px;margin:0 0 10px}.notice.warn{background:#fffaeb;border:1px solid #fedf89;color:#93370d}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(120px,1fr));gap:8px;margin-bottom:14px}
.tile{border:1px solid var(--line);border-radius:8px;padding:8px 10px;background:#fbfcfd}
.tile .v{font-size:22px;font-weight:650;font-variant-numeric:tabular-nums}.tile .l{color:var(--muted);font-size:11.5px;text-transform:uppercase;letter-spacing:.03em}
.tile .s{color:var(--muted);font-size:11px}
.tile.sev-critical{border-color:#f4b4ad;background:var(--crit-bg)}.tile.sev-critical .v{color:var(--crit)}
.tile.sev-high{border-color:#f7c3a3;background:var(--high-bg)}.tile.sev-high .v{color:var(--high)}
.tile.sev-medium{border-color:#f2d69b;background:var(--med-bg)}.tile.sev-medium .v{color:var(--med)}
.tile.sev-low .v{color:var(--low)}.tile.new .v{color:var(--accent)}.tile.warn .v{color:var(--high)}.tile.zero .v{color:#c0c5cd}
.sumgrid{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:18px;align-items:start}
@media (max-width:1000px){.sumgrid{grid-template-columns:1fr}}
table{border-collapse:collapse;width:100%}
th{text-align:left;font-weight:600;color:var(--muted);font-size:11px;text-transform:uppercase;letter-spacing:.03em;border-bottom:1px solid var(--line);padding:4px 8px}
td{padding:4px 8px;border-bottom:1px solid #f0f2f5;vertical-align:top}
.n{text-align:right;font-variant-numeric:tabular-nums}
.cats tr.zero td{color:#aab0b9}.cats .muted{font-size:11px}
.prov{display:grid;grid-template-columns:max-content 1fr;gap:3px 12px;margin:0;font-size:12px}
.prov dt{color:var(--muted)}.prov dd{margin:0;overflow-wrap:anywhere}
.empty{padding:28px;text-align:center;font-size:15px;color:var(--muted);border:1px dashed var(--line);border-radius:8px;margin:8px 0 16px}
.sev{display:inline-block;border-radius:4px;padding:0 6px;font-size:11px;font-weight:650;text-transform:uppercase;letter-spacing:.03em;line-height:18px}
.sev-critical{color:var(--crit);background:var(--crit-bg)}.sev-high{color:var(--high);background:var(--high-bg)}
.sev-medium{color:var(--med);background:var(--med-bg)}.sev-low{color:var(--low);background:var(--low-bg)}
.nv{display:inline-block;white-space:nowrap;border:1px solid #98a2b3;color:#344054;border-radius:4px;padding:0 5px;font-size:10.5px;font-weight:600;text-transform:uppercase;letter-spacing:.03em;line-height:16px}
.category{margin:0 0 22px}
.category>h2{position:sticky;top:46px;z-index:5;background:var(--bg);margin:0;padding:8px 2px;font-size:15px;font-weight:650;display:flex;gap:8px;align-items:center;border-bottom:1px solid var(--line)}
.category>h2 .desc{font-weight:400;font-size:12px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.count{background:#e4e7ec;color:#344054;border-radius:999px;padding:0 8px;font-size:11.5px;font-weight:600}
.group{margin:10px 0 0}.gh{font-size:12.5px;font-weight:600;margin:8px 0 6px;color:#344054;display:flex;gap:8px;align-items:center}
.gh code{background:#eef0f3;border-radius:4px;padding:0 5px}
.finding{display:grid;grid-template-columns:112px minmax(0,1fr) 190px;gap:14px;background:var(--panel);border:1px solid var(--line);border-left:4px solid var(--low);border-radius:8px;padding:10px 12px;margin:0 0 8px}
.finding.sevb-critical{border-left-color:var(--crit)}.finding.sevb-high{border-left-color:var(--high)}.finding.sevb-medium{border-left-color:#dc9b14}
.finding:focus{outline:2px solid var(--accent);outline-offset:1px}
.finding.d-confirm{background:#fbfefc}.finding.d-dismiss{opacity:.62}.finding.d-escalate{background:#fffbfa}
.thumb{width:112px}
.reveal{display:block;position:relative;padding:0;border:1px solid var(--line);border-radius:6px;background:#e9ecf1;width:104px;height:104px;overflow:hidden}
.reveal img{display:block;width:100%;height:100%;object-fit:contain}
.reveal .eye{position:absolute;left:0;right:0;bottom:0;font-size:10.5px;font-weight:600;text-transform:uppercase;letter-spacing:.05em;color:#fff;background:#1118278c;padding:2px 0}
.reveal[aria-pressed=true]{border-color:var(--accent);box-shadow:0 0 0 2px #2f5bd355}.reveal[aria-pressed=true] .eye{background:#2f5bd3cc}
.noimg{width:104px;height:104px;border-radius:6px;border:1px dashed #c0c6d0;display:flex;flex-direction:column;justify-content:center;align-items:center;gap:2px;color:var(--muted);font-size:11px;text-align:center;background:#f2f4f7}
.noimg b{text-transform:uppercase;letter-spacing:.04em;font-size:11px;color:#344054}
.nvbox{border-color:#98a2b3}.missbox b{color:var(--high)}
.line1{display:flex;gap:6px;align-items:center;flex-wrap:wrap}
.cat{font-weight:600}.fid{margin-left:auto;color:var(--muted)}
.status{font-size:11px;border-radius:4px;padding:0 6px;background:#eef0f3;color:#344054;line-height:18px}
.st-confirmed{background:var(--crit-bg);color:var(--crit)}.st-dismissed{background:#f2f4f7;color:#98a2b3}.st-escalated{background:#f4ebff;color:#6941c6}.st-new{background:#eaf0ff;color:var(--accent)}
.tag{font-size:10.5px;font-weight:650;text-transform:uppercase;letter-spacing:.04em;border-radius:4px;padding:0 5px;line-height:16px}
.tag.new{background:var(--accent);color:#fff}.tag.miss{background:var(--high-bg);color:var(--high);border:1px solid #f7c3a3}.tag.ok{background:var(--ok-bg);color:var(--ok)}.tag.cand{background:#eef0f6;color:#3d4a6b;border:1px dashed #9aa5c4}
.uri1{color:#475467;margin:3px 0 6px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.sig{margin:0 0 6px;font-size:12px}.sig td,.sig th{padding:2px 6px}.sig .pos{color:var(--crit);font-weight:600}.sig .neg{color:var(--muted)}
.kind{font-size:11px;background:#eef0f3;border-radius:3px;padding:0 4px;color:#344054}
.det .kv{display:inline-block;margin-right:10px;overflow-wrap:anywhere}.det i{color:var(--muted);font-style:normal}
.meta{display:grid;grid-template-columns:78px minmax(0,1fr);gap:2px 10px;margin:0;font-size:12.5px}
.meta dt{color:var(--muted);font-size:11.5px;padding-top:1px}.meta dd{margin:0;overflow-wrap:anywhere}
.prompt{white-space:pre-wrap;background:#f8f9fb;border-radius:4px;padding:2px 6px;max-height:10em;overflow:auto}.prompt.neg{color:#475467}
mark{background:#ffe08a;color:inherit;border-radius:2px;padding:0 1px}
.trunc{display:block;color:var(--muted);font-style:italic;margin-top:2px}
.res{display:inline-block;background:#f2f4f7;border-radius:4px;padding:0 6px;margin:0 4px 2px 0}
.locs{list-style:none;margin:0;padding:0}.locs li{overflow-wrap:anywhere}.locs li.gone .uri{text-decoration:line-through;color:var(--muted)}
.sel{user-select:all}
.decide{display:flex;flex-direction:column;gap:5px}
.decide button{border:1px solid #d0d5dd;background:#fff;border-radius:6px;padding:4px 8px;text-align:left;color:#344054}
.decide button:hover{background:#f9fafb}
.decide button[aria-pressed=true][data-decision=confirm]{background:var(--crit);border-color:var(--crit);color:#fff}
.decide button[aria-pressed=true][data-decision=dismiss]{background:#667085;border-color:#667085;color:#fff}
.decide button[aria-pressed=true][data-decision=escalate]{background:#6941c6;border-color:#6941c6;color:#fff}
.note{font:inherit;font-size:12px;border:1px solid #d0d5dd;border-radius:6px;padding:4px 6px;resize:vertical;min-height:44px}
.decide .note{margin:0}
.unit{display:flex;gap:12px;justify-content:space-between;border:1px dashed var(--line);border-radius:8px;padding:8px 10px;margin:6px 0;font-size:12px}
.unit .fired{margin:4px 0 0;padding-left:18px}.unit-decide{min-width:200px}
.prior{font-size:11px;color:var(--muted)}
.hidden{display:none!important}
.help{position:fixed;right:18px;top:56px;z-index:20;background:#fff;border:1px solid var(--line);border-radius:10px;box-shadow:0 10px 30px #0002;padding:12px 16px;width:330px}
.help h3{margin:0 0 6px;font-size:13px}kbd{font-family:var(--mono);background:#f2f4f7;border:1px solid #d0d5dd;border-bottom-width:2px;border-radius:4px;padding:0 5px;font-size:11px}
.toast{position:fixed;bottom:18px;left:50%;transform:translateX(-50%);background:#111827;color:#fff;padding:8px 14px;border-radius:8px;z-index:30}
@media print{.bar{position:static}.decide,.reveal .eye{display:none}.finding{break-inside:avoid;grid-template-columns:112px 1fr}}
"""

JS = r"""
(function(){
'use strict';
var body=document.body, rid=body.getAttribute('data-report-id')||'', KEY='audit-report-decisions:'+rid;
var cards=Array.prototype.slice.call(document.querySelectorAll('article.finding'));
var state={};
try{state=JSON.parse(localStorage.getItem(KEY)||'{}')||{};}catch(e){state={};}
function save(){try{localStorage.setItem(KEY,JSON.stringify(state));}catch(e){}}
function $(id){return document.getElementById(id);}
function toast(msg){var t=document.createElement('div');t.className='toast';t.textContent=msg;body.appendChild(t);setTimeout(function(){t.remove();},2600);}
function paint(card){
  var s=state[card.getAttribute('data-finding-id')]||{};
  card.classList.remove('d-confirm','d-dismiss','d-escalate');
  if(s.decision){card.classList.add('d-'+s.decision);}
  card.querySelectorAll('.decide button').forEach(function(b){b.setAttribute('aria-pressed',String(b.getAttribute('data-decision')===s.decision));});
  var n=card.querySelector('textarea.note'); if(n && document.activeElement!==n){n.value=s.note||'';}
}
function count(){var n=0;for(var k in state){if(state[k]&&state[k].decision){n++;}}$('ndec').textContent=String(n);}
/* a flagged cluster is one review unit: one decision for the cluster (state key "cluster:<id>:<category>") */
var units=Array.prototype.slice.call(document.querySelectorAll('div.unit'));
function ukey(u){return 'cluster:'+u.getAttribute('data-cluster-id')+':'+u.getAttribute('data-cat');}
function upaint(u){var s=state[ukey(u)]||{};
  u.querySelectorAll('.decide button').forEach(function(b){b.setAttribute('aria-pressed',String(b.getAttribute('data-decision')===s.decision));});
  var n=u.querySelector('textarea.note'); if(n && document.activeElement!==n){n.value=s.note||'';}}
units.forEach(function(u){
  upaint(u);
  u.querySelectorAll('.decide button').forEach(function(b){b.addEventListener('click',function(){
    var k=ukey(u), s=state[k]||{}, d=b.getAttribute('data-decision');
    if(s.decision===d){delete s.decision;}else{s.decision=d;s.at=new Date().toISOString();}
    s.cluster_id=u.getAttribute('data-cluster-id'); s.category=u.getAttribute('data-cat');
    state[k]=s; save(); upaint(u); count();});});
  var n=u.querySelector('textarea.note');
  n.addEventListener('input',function(){var k=ukey(u),s=state[k]||{};s.note=n.value;s.cluster_id=u.getAttribute('data-cluster-id');s.category=u.getAttribute('data-cat');state[k]=s;save();});
});
function decide(card,decision){
  var id=card.getAttribute('data-finding-id'), s=state[id]||{};
  if(s.decision===decision){delete s.decision;}else{s.decision=decision;s.at=new Date().toISOString();}
  s.item_id=card.getAttribute('data-item-id');
  state[id]=s; save(); paint(card); count(); apply();
}
cards.forEach(function(card){
  paint(card);
  card.querySelectorAll('.decide button').forEach(function(b){b.addEventListener('click',function(){decide(card,b.getAttribute('data-decision'));});});
  var n=card.querySelector('textarea.note');
  n.addEventListener('input',function(){var id=card.getAttribute('data-finding-id'),s=state[id]||{};s.note=n.value;s.item_id=card.getAttribute('data-item-id');state[id]=s;save();});
});
count();
/* thumbnails: the image element holds heavily blurred pixels; one click swaps in the reveal version */
var shown=null;
function cover(btn){var img=btn.querySelector('img');img.src=btn.getAttribute('data-cover');img.className='covered';btn.setAttribute('aria-pressed','false');if(shown===btn){shown=null;}}
function reveal(btn){if(shown&&shown!==btn){cover(shown);}var img=btn.querySelector('img');
  if(!btn.getAttribute('data-cover')){btn.setAttribute('data-cover',img.src);}
  img.src=btn.getAttribute('data-reveal');img.className='revealed';btn.setAttribute('aria-pressed','true');shown=btn;}
document.querySelectorAll('button.reveal').forEach(function(btn){
  btn.setAttribute('data-cover',btn.querySelector('img').src);
  btn.addEventListener('click',function(e){e.stopPropagation();if(btn.getAttribute('aria-pressed')==='true'){cover(btn);}else{reveal(btn);}});
});
function coverAll(){document.querySelectorAll('button.reveal[aria-pressed=true]').forEach(cover);}
/* filters */
var q=$('q'), cat=$('cat'), st=$('st'), sev={critical:1,high:1,medium:1,low:1};
function apply(){
  var text=(q.value||'').toLowerCase().trim(), c=cat.value, s=st.value, shownN=0;
  cards.forEach(function(card){
    var id=card.getAttribute('data-finding-id'), d=(state[id]||{}).decision, ok=!!sev[card.getAttribute('data-sev')];
    if(ok&&c){ok=card.getAttribute('data-cat')===c;}
    if(ok&&s){ok= s==='undecided'?!d : s==='decided'?!!d : s==='new'?card.getAttribute('data-new')==='1' : card.getAttribute('data-status')===s;}
    if(ok&&text){ok=card.getAttribute('data-search').indexOf(text)>=0;}
    card.classList.toggle('hidden',!ok); if(ok){shownN++;}
  });
  document.querySelectorAll('.group').forEach(function(g){g.classList.toggle('hidden',!g.querySelector('article.finding:not(.hidden)'));});
  document.querySelectorAll('section.category').forEach(function(g){g.classList.toggle('hidden',!g.querySelector('article.finding:not(.hidden)'));});
  $('shown').textContent=cards.length?(shownN+' of '+cards.length+' shown'):'';
}
q.addEventListener('input',apply);cat.addEventListener('change',apply);st.addEventListener('change',apply);
document.querySelectorAll('.chip[data-sev]').forEach(function(b){b.addEventListener('click',function(){
  var k=b.getAttribute('data-sev');sev[k]=sev[k]?0:1;b.setAttribute('aria-pressed',String(!!sev[k]));apply();});});
apply();
/* reviewer name and the download */
var rv=$('reviewer');
try{rv.value=localStorage.getItem('audit-report-reviewer')||'';}catch(e){}
rv.addEventListener('input',function(){try{localStorage.setItem('audit-report-reviewer',rv.value);}catch(e){}});
function decisions(){
  var by=(rv.value||'').trim(), out=[];
  cards.forEach(function(card){var id=card.getAttribute('data-finding-id'),s=state[id];
    if(s&&s.decision){out.push({finding_id:id,item_id:card.getAttribute('data-item-id'),decision:s.decision,note:s.note||'',by:by,at:s.at||new Date().toISOString()});}});
  units.forEach(function(u){var s=state[ukey(u)];
    if(s&&s.decision){out.push({cluster_id:u.getAttribute('data-cluster-id'),category:u.getAttribute('data-cat'),decision:s.decision,note:s.note||'',by:by,at:s.at||new Date().toISOString()});}});
  /* in the order they were made: review --import appends them so, and the latest decision wins */
  out.sort(function(a,b){return a.at<b.at?-1:(a.at>b.at?1:0);});
  return out;
}
window.auditDecisions=decisions;
$('download').addEventListener('click',function(){
  if(!(rv.value||'').trim()){rv.focus();toast('Enter your name as reviewer first');return;}
  var list=decisions(); if(!list.length){toast('No decisions yet');return;}
  var blob=new Blob([JSON.stringify(list,null,2)+'\n'],{type:'application/json'});
  var a=document.createElement('a'), stamp=new Date().toISOString().replace(/[:.]/g,'').slice(0,15);
  a.href=URL.createObjectURL(blob); a.download='decisions-'+(body.getAttribute('data-index')||'report').replace(/[^A-Za-z0-9_.-]/g,'_')+'-'+stamp+'Z.json';
  body.appendChild(a); a.click(); setTimeout(function(){URL.revokeObjectURL(a.href);a.remove();},1000);
  toast(list.length+' decision'+(list.length===1?'':'s')+' downloaded');
});
/* keyboard */
var help=$('help');
$('helpbtn').addEventListener('click',function(){help.hidden=!help.hidden;});
function visible(){return cards.filter(function(c){return !c.classList.contains('hidden');});}
function current(){var a=document.activeElement;return a&&a.closest?a.closest('article.finding'):null;}
function move(step){var v=visible();if(!v.length){return;}var i=v.indexOf(current());i=i<0?(step>0?0:v.length-1):Math.max(0,Math.min(v.length-1,i+step));v[i].focus();v[i].scrollIntoView({block:'nearest'});}
document.addEventListener('keydown',function(e){
  var t=e.target, typing=t&&(t.tagName==='INPUT'||t.tagName==='TEXTAREA'||t.tagName==='SELECT');
  if(e.key==='Escape'){coverAll();help.hidden=true;if(typing){var c=current();if(c){c.focus();}else{t.blur();}}return;}
  if(typing||e.ctrlKey||e.metaKey||e.altKey){return;}
  var card=current();
  if(e.key==='j'){move(1);e.preventDefault();}
  else if(e.key==='k'){move(-1);e.preventDefault();}
  else if(e.key==='/'){q.focus();q.select();e.preventDefault();}
  else if(e.key==='?'){help.hidden=!help.hidden;}
  else if(card&&(e.key==='c'||e.key==='d'||e.key==='e')){decide(card,{c:'confirm',d:'dismiss',e:'escalate'}[e.key]);}
  else if(card&&e.key==='n'){card.querySelector('textarea.note').focus();e.preventDefault();}
  else if(card&&e.key==='v'){var b=card.querySelector('button.reveal');if(b){b.click();}}
});
})();
"""
